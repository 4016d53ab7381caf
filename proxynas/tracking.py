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
from typing import Any, Callable, Mapping, Sequence

from proxynas.artifacts import Figure, Metrics, Table, Tensors
from proxynas.config.typed import flatten, to_dict
from proxynas.engine.hooks import Hook
from proxynas.storage import prepare_sqlite, sqlite_path

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def _artifact_root(tracking_uri: str) -> str | None:
    """Keep artifacts beside a local sqlite store (under ``mlruns/``), not in the CWD."""
    db = sqlite_path(tracking_uri)
    return (db.parent.resolve() / "artifacts").as_uri() if db is not None else None


def open_experiment(tracking_uri: str, experiment: str):
    """``(client, experiment_id)`` of ``experiment`` in the store at ``tracking_uri``, created if needed.

    The one place an MLflow store is opened: a local sqlite store gets its
    folder, and a new experiment keeps its artifacts beside the database.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=prepare_sqlite(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return client, exp.experiment_id
    return client, client.create_experiment(experiment, artifact_location=_artifact_root(tracking_uri))


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
        self.client, self.experiment_id = open_experiment(tracking_uri, experiment)
        self.tracking_uri = tracking_uri
        self.tracked = tracked
        self.parent_id: str | None = None
        self._stage_runs: dict[str, str] = {}

    # -- pipeline ---------------------------------------------------------
    def before_pipeline(self, graph, run_info: dict) -> None:
        self.parent_id = self.start_run(run_info.get("name", "pipeline"),
                                        tags={"proxynas.pipeline": str(run_info.get("pipeline", ""))})
        self.log_params(self.parent_id, run_info.get("config", {}))
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
        run_id = self.start_run(
            stage.name,
            tags={"proxynas.stage": stage.name, "proxynas.cache_key": key, "proxynas.cached": str(cached)},
            parent=self.parent_id,
        )
        self._stage_runs[stage.name] = run_id
        params = to_dict(stage.params)
        if isinstance(params, Mapping):
            self.log_params(run_id, params)

    def after_stage(self, stage, key: str, outputs: dict, seconds: float, cached: bool) -> None:
        run_id = self._stage_runs.pop(stage.name)
        self.log_metrics(run_id, {"stage_seconds": seconds})
        names = [n for n in outputs if not cached or self.tracked(n)]
        for name in names:
            value = outputs[name]
            for target in (run_id, self.parent_id):
                if target:
                    self.log_output(target, value)
        self.client.set_terminated(run_id, "FINISHED")

    def on_stage_error(self, stage, key: str, error: BaseException) -> None:
        run_id = self._stage_runs.pop(stage.name, None)
        if run_id:
            self.client.set_tag(run_id, "proxynas.error", str(error)[:5000])
            self.client.set_terminated(run_id, "FAILED")

    # -- logging, also used by search and tune ---------------------------
    def start_run(self, name: str, tags: Mapping[str, str] = {}, parent: str | None = None) -> str:
        """A new run of this hook's experiment, nested under run ``parent`` if given; its id.

        End it with :meth:`end_run`.
        """
        tags = {**tags, "mlflow.parentRunId": parent} if parent else dict(tags)
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def log_params(self, run_id: str, data: Mapping[str, Any]) -> None:
        """The flattened ``data`` as params of ``run_id`` (values cut to MLflow's limit)."""
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _params(data).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])

    def log_metrics(self, run_id: str, values: Mapping[str, float]) -> None:
        """Finite scalar ``values`` as metrics of ``run_id`` at step 0."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in values.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        ]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def log_history(
        self, run_id: str, name: str, values: Sequence[float], steps: Sequence[int] | None = None
    ) -> None:
        """``values`` as the history of metric ``name`` at ``steps`` (default 1, 2, ...); NaNs are skipped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        steps = steps if steps is not None else range(1, len(values) + 1)
        history = [Metric(name, float(v), now, int(s)) for s, v in zip(steps, values) if math.isfinite(v)]
        for i in range(0, len(history), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=history[i : i + 1000])

    def log_output(self, run_id: str, value: Any) -> None:
        """A typed stage output (Metrics, Table, Figure, Tensors, or a mapping of them) on ``run_id``."""
        if isinstance(value, Metrics):
            self.log_metrics(run_id, value.values)
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
                    self.log_output(run_id, item)


class MLflowTrialCallback:
    """An Optuna callback logging each finished trial as a nested MLflow run.

    Our own, because optuna-integration's ``MLflowCallback`` is deprecated and
    logs flat runs: here every trial is a child of one parent run (a tuning or
    search session), with its parameters, value, state and intermediate values
    (as a metric history), so ``mlflow ui`` shows the study as one tree. It logs
    through :class:`MLflowHook`'s public methods, as ``proxynas run`` does.
    """

    def __init__(self, tracking_uri: str, experiment: str, parent_name: str, params: Mapping[str, Any] = {}) -> None:
        self.tracker = MLflowHook(tracking_uri, experiment)
        self.client = self.tracker.client
        self.parent_id = self.tracker.start_run(parent_name)
        if params:
            self.tracker.log_params(self.parent_id, params)

    def __call__(self, study, trial) -> None:
        run_id = self.tracker.start_run(
            f"trial {trial.number}",
            tags={"optuna.study": study.study_name, "optuna.state": trial.state.name},
            parent=self.parent_id,
        )
        self.tracker.log_params(run_id, {k: str(v) for k, v in trial.params.items()})
        steps = sorted(trial.intermediate_values)
        if steps:
            self.tracker.log_history(run_id, "intermediate_value", [trial.intermediate_values[s] for s in steps],
                                     steps=steps)
        values = {("value" if i == 0 else f"value_{i}"): v for i, v in enumerate(trial.values or [])}
        if trial.duration is not None:
            values["seconds"] = trial.duration.total_seconds()
        self.tracker.log_metrics(run_id, values)
        self.tracker.end_run(run_id, "FINISHED" if trial.state.name == "COMPLETE" else "KILLED")

    def finish(self, metrics: Mapping[str, float]) -> None:
        self.tracker.log_metrics(self.parent_id, metrics)
        self.tracker.end_run(self.parent_id)
