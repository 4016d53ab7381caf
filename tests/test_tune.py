"""proxynas tune: calibration/held-out split, the Kendall objective, pruning, the CLI."""

import hashlib
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from proxynas.cli import main
from proxynas.errors import ConfigError
from proxynas.tune import Tuner, as_overrides, kendall, split_archs

QUICKSTART = Path(__file__).resolve().parents[1] / "pipelines" / "quickstart.yaml"
PARAMS = "tune.params={proxy.lr: {low: 0.001, high: 10.0, log: true}}"


def _unit(arch: str, salt: str) -> float:
    return int(hashlib.sha256((salt + arch).encode()).hexdigest()[:8], 16) / 2**32


def fake_factory(calls):
    """Reference = a fixed number per arch; proxy = reference + noise scaled by proxy.lr."""

    def factory(config, row):
        calls.append((row, config.proxy.lr))

        def evaluate(arch):
            ref = _unit(arch, "ref")
            value = ref if row == "reference" else ref + config.proxy.lr * _unit(arch, "noise")
            return SimpleNamespace(value=value)

        return SimpleNamespace(evaluate=evaluate)

    return factory


def _tuner(tmp_path, extra=(), calls=None):
    overrides = [PARAMS, "tune.trials=12", "tune.calibration=10", "tune.holdout=8", "tune.report_every=2",
                 f"run.cache_dir={tmp_path / 'cache'}", *extra]
    return Tuner(QUICKSTART, overrides, objective_factory=fake_factory([] if calls is None else calls))


def test_kendall_hand_cases():
    assert kendall([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall([3, 2, 1], [10, 20, 30]) == pytest.approx(-1.0)
    assert kendall([1, 3, 2], [10, 20, 30]) == pytest.approx(1 / 3)
    assert kendall([5, 5, 5], [1, 2, 3]) == 0.0  # a constant proxy ranks nothing


def test_calibration_and_holdout_are_disjoint(tmp_path):
    tuner = _tuner(tmp_path)
    cal, hold = split_archs(tuner.config)
    assert len(cal) == 10 and len(hold) == 8
    assert not set(cal) & set(hold)
    assert (tuner.calibration, tuner.holdout) == (cal, hold)


def test_tuning_finds_the_low_noise_setting_and_reports_held_out(tmp_path):
    tuner = _tuner(tmp_path)
    study = tuner.open(f"sqlite:///{tmp_path / 'tune.db'}")
    assert tuner.work(study) == 12
    result = tuner.finish(study)
    assert result.best_params["proxy.lr"] < 0.3  # noise well below the reference spread
    assert result.calibration_tau > 0.8 and result.holdout_tau > 0.6
    # the quickstart's own lr (0.05) is scored on the same held-out archs for comparison
    assert -1 <= result.default_holdout_tau <= 1
    assert result.trials == 12


def test_unpromising_settings_are_pruned(tmp_path):
    tuner = _tuner(tmp_path, ["tune.trials=25", "tune.sampler=random"])
    study = tuner.open(f"sqlite:///{tmp_path / 'tune.db'}")
    tuner.work(study)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.intermediate_values for t in pruned)


def test_infeasible_settings_are_pruned_not_fatal(tmp_path):
    both = "tune.params={proxy.lr: {low: 0.001, high: 10.0, log: true}, distill.ipc: {choices: [0, 2]}}"
    tuner = _tuner(tmp_path, [both, "tune.trials=10", "tune.sampler=random"])
    study = tuner.open(f"sqlite:///{tmp_path / 'tune.db'}")
    tuner.work(study)
    bad = [t for t in study.trials if t.params["distill.ipc"] == 0]
    good = [t for t in study.trials if t.params["distill.ipc"] == 2]
    assert bad and good
    assert all(t.state == optuna.trial.TrialState.PRUNED and "ipc" in t.user_attrs["infeasible"] for t in bad)
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in good)
    assert tuner.finish(study).best_params["distill.ipc"] == 2


def test_overrides_keep_floats_exact():
    assert as_overrides({"proxy.lr": 0.1 + 0.2, "proxy.epochs": 5}) == ["proxy.lr=0.30000000000000004", "proxy.epochs=5"]


def test_empty_or_bad_params_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="tune.params is empty"):
        Tuner(QUICKSTART, [], objective_factory=fake_factory([]))
    with pytest.raises(ConfigError, match="low < high"):
        Tuner(QUICKSTART, ["tune.params={proxy.lr: {low: 1.0, high: 0.5}}"], objective_factory=fake_factory([]))
    with pytest.raises(ConfigError, match="cannot be tuned"):
        Tuner(QUICKSTART, ["tune.params={run.workers: {choices: [1, 2]}}"], objective_factory=fake_factory([]))


@pytest.mark.parametrize("key, why", [
    ("reference.epochs", "the reference is computed once"),
    ("data.val_fraction", "the dataset is loaded once"),
    ("space.channels", "drawn from the space once"),
    ("sample.num_archs", "drawn by tune.seed"),
])
def test_settings_a_trial_cannot_change_are_refused_in_one_line(key, why, capsys):
    value = "{low: 0.1, high: 0.5}" if key == "data.val_fraction" else "{choices: [4, 8]}"
    with pytest.raises(ConfigError, match=rf"tune: params: '{key}' cannot be tuned \(.*{why}") as info:
        Tuner(QUICKSTART, [f"tune.params={{{key}: {value}}}"], objective_factory=fake_factory([]))
    assert "\n" not in str(info.value)
    assert main(["tune", str(QUICKSTART), "--set", f"tune.params={{{key}: {value}}}", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tune: params") and "cannot be tuned" in err and "\n" not in err


def test_tune_and_worker_commands_end_to_end(tmp_path, capsys):
    """Real proxies on tiny settings: a worker fills the study, tune scores the held-out set."""
    tiny = [
        "tune.params={proxy.epochs: {choices: [1, 2]}}", "tune.row=random", "tune.trials=3",
        "tune.calibration=4", "tune.holdout=3", "distill.ipc=2", "proxy.epochs=1", "reference.epochs=1",
        "space.channels=4", "run.device=cpu", f"run.cache_dir={tmp_path / 'cache'}",
    ]
    args = []
    for o in tiny:
        args += ["--set", o]
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert main(["worker", str(QUICKSTART), *args, "--storage", storage, "--tracking-uri", tracking]) == 0
    assert "finished 3 trials" in capsys.readouterr().out
    assert main(["tune", str(QUICKSTART), *args, "--storage", storage, "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "finished 0 trials" in out and "held-out" in out
    study = optuna.load_study(study_name="tune/quickstart/random", storage=storage)
    assert len([t for t in study.trials if t.state.is_finished()]) == 3
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("proxynas").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 3 and all("proxy.epochs" in r.data.params for r in children)
