import math

import optuna

from proxynas.ledger import Ledger


def test_record_and_read_back(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    evals = [
        {"arch": "a", "code": (0, 1), "value": 50.0, "reference": 90.0, "proxy_seconds": 1.5},
        {"arch": "b", "code": (2, 0), "value": 40.0, "reference": 80.0, "proxy_seconds": 2.0},
        {"arch": "c", "code": (1, 1), "value": math.nan, "reference": 70.0, "proxy_seconds": 0.1},
    ]
    study = ledger.record("run/dm", evals, cardinalities=(3, 2), attrs={"proxy": "dm"})
    assert study.best_trial.user_attrs["arch"] == "a"
    assert study.best_trial.params == {"x0": 0, "x1": 1}
    assert study.user_attrs["proxy"] == "dm"
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # the NaN score
    back = sorted(ledger.evaluations("run/dm"), key=lambda e: e["arch"])
    assert [(e["arch"], e["value"], e["reference"]) for e in back] == [("a", 50.0, 90.0), ("b", 40.0, 80.0)]


def test_recording_again_replaces_the_study(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    ev = [{"arch": "a", "code": (0,), "value": 1.0}]
    ledger.record("s", ev, cardinalities=(2,))
    ledger.record("s", ev, cardinalities=(2,))
    assert len(ledger.evaluations("s")) == 1


def test_ledger_trials_seed_a_search_study(tmp_path):
    """Ledger and search encode an arch with the same distributions, so evaluations can seed a search."""
    from proxynas.search.encoding import arch_distributions, suggest_code
    from proxynas.spaces import NB201Space

    space = NB201Space(channels=4, cells_per_stage=1)
    archs = space.sample(6, seed=0)
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    evaluated = ledger.record(
        "run/dm",
        [{"arch": a, "code": space.encode(a), "value": float(i)} for i, a in enumerate(archs)],
        cardinalities=space.cardinalities(),
    )
    assert evaluated.trials[0].distributions == arch_distributions(space)
    search = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    search.add_trials(evaluated.trials)  # Optuna refuses a parameter with two distribution kinds
    for _ in range(2):
        trial = search.ask()
        code = suggest_code(trial, space)
        search.tell(trial, 0.0)
        assert space.decode(code) in set(space.enumerate())
    assert len(search.trials) == 8
