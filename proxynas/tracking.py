"""MLflow tracking as a runner hook: stage code never calls MLflow.

One parent run per pipeline run, one nested run per stage. Params are the
flattened config; :class:`~proxynas.artifacts.Metrics`, ``Figure`` and ``Table``
outputs of a stage become metrics and artifacts of its run and of the parent.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from proxynas.artifacts import Figure, Metrics, Table, Tensors
from proxynas.config.typed import flatten, to_dict
from proxynas.engine.hooks import Hook

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def _artifact_root(tracking_uri: str) -> str | None:
    """Keep artifacts beside a local sqlite store (under ``mlruns/``), not in the CWD."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent.resolve() / "artifacts").as_uri()
    return None


def _params(data: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:6000] for k, v in flatten(data).items()}


class MLflowHook(Hook):
    """Logs a pipeline run to MLflow (``mlflow ui --backend-store-uri <uri>`` to browse)."""

    def __init__(
        self,
        tracking_uri: str = DEFAULT_TRACKING_URI,
        experiment: str = "proxynas",
        *,
        tracked: Callable[[str], bool] = lambda name: True,
    ) -> None:
        """``tracked(output_name)`` says which outputs of a *cached* stage to load and log
        again (so a re-run's MLflow run is complete without loading big cached data)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self._mlflow = mlflow
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            exp.experiment_id
            if exp is not None
            else self.client.create_experiment(experiment, artifact_location=_artifact_root(tracking_uri))
        )
        self.tracked = tracked
        self.parent_id: str | None = None
        self._stage_runs: dict[str, str] = {}

    # -- pipeline ---------------------------------------------------------
    def before_pipeline(self, graph, run_info: dict) -> None:
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_info.get("name", "pipeline"),
            tags={"proxynas.pipeline": str(run_info.get("pipeline", ""))},
        )
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, run_info.get("config", {}))
        if "config_yaml" in run_info:
            self.client.log_text(self.parent_id, run_info["config_yaml"], "config.yaml")

    def after_pipeline(self, outputs: dict) -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, "FINISHED")

    def on_pipeline_error(self, error: BaseException) -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, "FAILED")

    # -- stages -----------------------------------------------------------
    def before_stage(self, stage, key: str, cached: bool) -> None:
        run = self.client.create_run(
            self.experiment_id,
            run_name=stage.name,
            tags={
                "mlflow.parentRunId": self.parent_id or "",
                "proxynas.stage": stage.name,
                "proxynas.cache_key": key,
                "proxynas.cached": str(cached),
            },
        )
        self._stage_runs[stage.name] = run.info.run_id
        params = to_dict(stage.params)
        if isinstance(params, Mapping):
            self._log_params(run.info.run_id, params)

    def after_stage(self, stage, key: str, outputs: dict, seconds: float, cached: bool) -> None:
        run_id = self._stage_runs.pop(stage.name)
        self._log_metrics(run_id, {"stage_seconds": seconds})
        names = [n for n in outputs if not cached or self.tracked(n)]
        for name in names:
            value = outputs[name]
            for target in (run_id, self.parent_id):
                if target:
                    self._log_output(target, value)
        self.client.set_terminated(run_id, "FINISHED")

    def on_stage_error(self, stage, key: str, error: BaseException) -> None:
        run_id = self._stage_runs.pop(stage.name, None)
        if run_id:
            self.client.set_tag(run_id, "proxynas.error", str(error)[:5000])
            self.client.set_terminated(run_id, "FAILED")

    # -- helpers ----------------------------------------------------------
    def _log_params(self, run_id: str, data: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _params(data).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])

    def _log_metrics(self, run_id: str, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in values.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        ]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def _log_output(self, run_id: str, value: Any) -> None:
        if isinstance(value, Metrics):
            self._log_metrics(run_id, value.values)
        elif isinstance(value, Table):
            self.client.log_text(run_id, value.to_csv(), f"{value.name}.csv")
        elif isinstance(value, (Figure, Tensors)):
            with tempfile.TemporaryDirectory() as tmp:
                if isinstance(value, Figure):
                    path = Path(tmp) / f"{value.name}.png"
                    path.write_bytes(value.png)
                else:
                    import torch

                    path = Path(tmp) / f"{value.name}.pt"
                    torch.save(dict(value.tensors), path)
                self.client.log_artifact(run_id, str(path))
        elif isinstance(value, Mapping):
            for item in value.values():
                if isinstance(item, (Metrics, Table, Figure, Tensors)):
                    self._log_output(run_id, item)


class MLflowTrialCallback:
    """An Optuna callback logging each finished trial as a nested MLflow run.

    Our own, because optuna-integration's ``MLflowCallback`` is deprecated and
    logs flat runs: here every trial is a child of one parent run (a tuning or
    search session), with its parameters, value, state and intermediate values
    (as a metric history), so ``mlflow ui`` shows the study as one tree.
    """

    def __init__(self, tracking_uri: str, experiment: str, parent_name: str, params: Mapping[str, Any] = {}) -> None:
        from mlflow.tracking import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            exp.experiment_id
            if exp is not None
            else self.client.create_experiment(experiment, artifact_location=_artifact_root(tracking_uri))
        )
        parent = self.client.create_run(self.experiment_id, run_name=parent_name)
        self.parent_id = parent.info.run_id
        if params:
            self._log_batch(self.parent_id, params=_params(params))

    def _log_batch(self, run_id: str, *, params=None, metrics=None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            params=[Param(k, v) for k, v in (params or {}).items()],
            metrics=[Metric(k, v, now, step) for k, v, step in (metrics or [])],
        )

    def __call__(self, study, trial) -> None:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial {trial.number}",
            tags={"mlflow.parentRunId": self.parent_id, "optuna.study": study.study_name,
                  "optuna.state": trial.state.name},
        )
        metrics = [("intermediate_value", float(v), int(step)) for step, v in trial.intermediate_values.items()
                   if math.isfinite(v)]
        for i, value in enumerate(trial.values or []):
            if math.isfinite(value):
                metrics.append(("value" if i == 0 else f"value_{i}", float(value), 0))
        if trial.duration is not None:
            metrics.append(("seconds", trial.duration.total_seconds(), 0))
        self._log_batch(run.info.run_id, params={k: str(v) for k, v in trial.params.items()}, metrics=metrics)
        self.client.set_terminated(run.info.run_id, status="FINISHED" if trial.state.name == "COMPLETE" else "KILLED")

    def finish(self, metrics: Mapping[str, float]) -> None:
        self._log_batch(self.parent_id, metrics=[(k, float(v), 0) for k, v in metrics.items()])
        self.client.set_terminated(self.parent_id)
