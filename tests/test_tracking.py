"""MLflow tracking: the hook's public logging methods and the Optuna trial callback built on them."""

import math

import optuna
from mlflow.tracking import MlflowClient

from proxynas.artifacts import Table
from proxynas.tracking import MLflowHook, MLflowTrialCallback


def test_public_methods_log_nested_runs_params_metrics_history_and_tables(tmp_path):
    uri = f"sqlite:///{tmp_path / 'deep' / 'store' / 'mlflow.db'}"  # the store's folder is created
    tracker = MLflowHook(uri, "exp")
    parent = tracker.start_run("session", tags={"proxynas.kind": "search"})
    child = tracker.start_run("trial", parent=parent)
    tracker.log_params(child, {"proxy": {"lr": 0.1, "epochs": 5}})
    tracker.log_metrics(child, {"value": 3.5, "broken": math.nan})
    tracker.log_history(parent, "best_so_far", [1.0, math.nan, 2.0])
    tracker.log_output(parent, Table("trials", [{"arch": "a", "value": 1.0}]))
    tracker.end_run(child)
    tracker.end_run(parent, "KILLED")

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.info.status == "FINISHED"
    assert run.data.params == {"proxy.lr": "0.1", "proxy.epochs": "5"}
    assert run.data.metrics == {"value": 3.5}  # NaN skipped
    history = client.get_metric_history(parent, "best_so_far")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (3, 2.0)]
    assert client.get_run(parent).info.status == "KILLED"
    assert [a.path for a in client.list_artifacts(parent)] == ["trials.csv"]
    assert (tmp_path / "deep" / "store" / "artifacts").is_dir()  # artifacts beside the database


def test_trial_callback_logs_each_trial_under_one_parent(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback = MLflowTrialCallback(uri, "exp", "tune dm", params={"tune": {"row": "dm"}})
    study = optuna.create_study(direction="maximize")

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.report(x / 2, 5)
        trial.report(x, 10)
        return x

    study.optimize(objective, n_trials=2, callbacks=[callback])
    callback.finish({"holdout_tau": 0.4})
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    parent = client.get_run(callback.parent_id)
    assert parent.data.params == {"tune.row": "dm"} and parent.data.metrics == {"holdout_tau": 0.4}
    trials = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == callback.parent_id),
                    key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in trials] == ["trial 0", "trial 1"]
    for run, trial in zip(trials, study.trials):
        assert run.data.params == {"x": str(trial.params["x"])}
        assert run.data.metrics["value"] == trial.value and run.data.metrics["seconds"] >= 0
        history = client.get_metric_history(run.info.run_id, "intermediate_value")
        assert [(m.step, m.value) for m in history] == [(5, trial.value / 2), (10, trial.value)]
        assert run.info.status == "FINISHED"
