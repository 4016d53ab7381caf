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
