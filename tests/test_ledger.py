"""The evaluation ledger: records read back, studies replaced, and a database that cannot be used named early."""

import math
import multiprocessing
from pathlib import Path

import optuna
import pytest

from proxynas.cli import main
from proxynas.errors import ConfigError
from proxynas.ledger import Ledger, check_ledger_url

CTX = multiprocessing.get_context("fork")
QUICKSTART = Path(__file__).resolve().parents[1] / "pipelines" / "quickstart.yaml"


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


def _damaged(path: Path) -> None:
    """Scramble every page but the first: the header stays intact, so only opening finds the damage."""
    data = bytearray(path.read_bytes())
    data[4096:] = bytes((b * 7 + 13) & 0xFF for b in data[4096:])
    path.write_bytes(bytes(data))


def test_a_ledger_url_that_cannot_be_used_is_one_line_naming_the_setting_and_fix(tmp_path):
    (tmp_path / "dir.db").mkdir()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x13\x37" * 4000)
    damaged = tmp_path / "damaged.db"
    Ledger(f"sqlite:///{damaged}").record("s", [{"arch": "a", "code": (0,), "value": 1.0}], cardinalities=(2,))
    _damaged(damaged)
    cases = {
        "ledger.db": "is not a database URL; use sqlite:///",
        f"sqlite:///{tmp_path / 'dir.db'}": "is a folder, not a database file; point it at a writable file, "
                                           "e.g. --set run.ledger=sqlite:///",
        f"sqlite:///{tmp_path / 'file.db' / 'x.db'}": "cannot create folder",
        f"sqlite:///{garbage}": f"{garbage} is not a readable SQLite database (corrupted or overwritten); "
                                f"move it aside (mv {garbage} {garbage}.corrupt) or delete it",
    }
    (tmp_path / "file.db").write_text("a file where a folder is needed")
    for url, expected in cases.items():
        for fn in (check_ledger_url, Ledger):
            with pytest.raises(ConfigError) as info:
                fn(url)
            message = str(info.value)
            assert message.startswith("run.ledger ") and expected in message and "\n" not in message, message
    check_ledger_url(f"sqlite:///{damaged}")  # the header is intact: only opening it tells
    with pytest.raises(ConfigError, match=rf"^run.ledger sqlite:///.*: {damaged} is not a readable SQLite database"):
        Ledger(f"sqlite:///{damaged}")


def test_proxynas_run_with_an_unusable_ledger_exits_2_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    garbage = tmp_path / "ledger.db"
    garbage.write_bytes(b"garbage" * 100)
    code = main(["run", str(QUICKSTART), "--no-mlflow", "--set", f"run.ledger=sqlite:///{garbage}",
                 "--set", "run.device=cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: run.ledger sqlite:///"), err
    assert "move it aside" in err
    cache = tmp_path / ".proxynas" / "cache"
    assert not (cache.exists() and any(cache.iterdir()))  # no stage ran (the folder is only checked writable)


def _open_and_record(url, barrier, row, out):
    barrier.wait()
    try:
        Ledger(url).record(f"run/{row}", [{"arch": row, "code": (0,), "value": 1.0}], cardinalities=(2,))
        out.put("ok")
    except Exception as exc:  # the test shows what went wrong in the child
        out.put(f"{type(exc).__name__}: {exc}")


def test_three_processes_open_a_fresh_ledger_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'ledger.db'}"
    barrier, out = CTX.Barrier(3), CTX.Queue()
    procs = [CTX.Process(target=_open_and_record, args=(url, barrier, row, out)) for row in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [out.get(timeout=5) for _ in procs] == ["ok"] * 3
    names = {s.study_name for s in optuna.get_all_study_summaries(url)}
    assert names == {"run/a", "run/b", "run/c"}
