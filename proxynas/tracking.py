"""MLflow tracking as a runner hook: stage code never calls MLflow.

One parent run per pipeline run, one nested run per stage. Params are the
flattened config; :class:`~proxynas.artifacts.Metrics`, ``Figure`` and ``Table``
outputs of a stage become metrics and artifacts of its run and of the parent.

A process that is killed (SIGKILL, OOM killer, power loss) cannot end its runs,
and MLflow would show them RUNNING forever. So every run the hook creates names
its owner process in tags (:class:`Owner`), and each new top-level run first
ends the RUNNING runs of its experiment whose owner is gone, as KILLED
(:meth:`MLflowHook.end_dead_runs`); a new run of the same name as an unfinished
one is tagged ``proxynas.resumes=<old run id>``.

Where users look: MLflow 3's UI opens an experiment on its GenAI pages
(traces, judges, prompts) unless told it is about training models, and its runs
table shows no metric columns until one picks them. So the experiment is tagged
as model training (:data:`EXPERIMENT_KIND_TAG`), every top-level run's rank
metrics are added to a saved runs-table view of the experiment, the page
:func:`runs_table_url` names opens the model-training pages on that view, and a
table output of a top-level run is also an MLflow table artifact
(``<name>.json``, which the UI shows as a table) beside its CSV.
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from proxynas.artifacts import Figure, Metrics, Table, Tensors
from proxynas.config.typed import flatten, to_dict
from proxynas.engine.hooks import Hook
from proxynas.storage import check_sqlite, sqlite_errors, sqlite_lock, sqlite_path

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
#: where a tracking URI comes from, named in its errors
TRACKING_SETTING = "run.tracking_uri (--tracking-uri)"
_TRACKING_FIX = "point it at a writable file, e.g. --tracking-uri sqlite:///PATH/mlflow.db"

#: tags naming the process that owns a run, on every run the hook creates (see :class:`Owner`)
HOST_TAG, PID_TAG, PROCESS_TAG = "proxynas.host", "proxynas.pid", "proxynas.process"
#: tag of a top-level run that retries an unfinished (KILLED or FAILED) run of the same name: that run's id
RESUMES_TAG = "proxynas.resumes"
#: tag saying why a run failed or was ended by another process
ERROR_TAG = "proxynas.error"
PARENT_TAG = "mlflow.parentRunId"
#: a RUNNING run whose owner cannot be checked from here (another host or container, or a run
#: without owner tags) is ended only once it started this long ago (seconds). Runs of a
#: pipeline take hours, rarely days; a live run ended by mistake is set FINISHED or FAILED
#: again by its own process when it ends (MLflow lets a run's status change after it ended).
STALE_AFTER = 7 * 24 * 3600.0

#: MLflow's experiment tag for the kind of an experiment, and the value of a model-training one
#: (``custom_model_development``: runs, metrics and charts; ``genai_development``: traces, judges,
#: prompts), as spelled in MLflow 3.17's UI bundle. That UI shows the kind the tag names in the
#: experiment's details, but picks its pages by a switch kept in the browser (GenAI unless
#: changed), so :func:`runs_table_url` asks for the training pages in the URL as well.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
#: prefix of the experiment tags that hold the runs table's saved views (MLflow 3.17's UI), and the
#: key of the one proxynas keeps: the rank metrics as columns
VIEW_TAG_PREFIX, RANKS_VIEW = "mlflow.sharedViewState.", "proxynas-ranks"
#: the metrics (``<row>.<name>``, the report's) that the saved view shows as columns
RANK_COLUMNS = ("spearman", "kendall")
#: the most columns the view keeps: the newest run's first, then older runs' (a view too
#: wide to read is no better than none, and MLflow caps a tag at 20,000 characters)
MAX_VIEW_COLUMNS = 24
#: the most rows of a table that is also logged as an MLflow table: the UI loads such a table
#: whole into the browser, so a bigger one (learning curves of many archs) stays a CSV only
MAX_TABLE_ROWS = 10_000


def check_tracking_uri(uri: str, setting: str = TRACKING_SETTING) -> None:
    """Fail with a one-line ConfigError unless an MLflow store at ``uri`` can be written.

    Cheap (no database is opened), so the app runs it before any stage. A local
    sqlite store must be creatable, or an intact and writable SQLite file (see
    :func:`proxynas.storage.check_sqlite`); without this, MLflow retries a failed
    open for almost two minutes and then prints a traceback. Other URIs (a
    tracking server, a database server) are checked when the hook opens them.
    """
    check_sqlite(uri, setting, _TRACKING_FIX)


def artifact_root(tracking_uri: str) -> str | None:
    """Keep artifacts beside a local sqlite store (under ``mlruns/``), not in the CWD."""
    db = sqlite_path(tracking_uri)
    return (db.parent.resolve() / "artifacts").as_uri() if db is not None else None


def open_experiment(tracking_uri: str, experiment: str, setting: str = TRACKING_SETTING, *, create: bool = True):
    """``(client, experiment_id)`` of ``experiment`` in the store at ``tracking_uri``, created if needed.

    The one place an MLflow store is opened: a local sqlite store is checked
    (:func:`check_tracking_uri`) and gets its folder, and a new experiment keeps
    its artifacts beside the database. Opening holds the store's lock file:
    MLflow creates a fresh store's schema without one, so runs starting at once
    in a new folder would collide ("table ... already exists"), and so would
    their creating the same experiment. A corrupted or unwritable store is a
    one-line ConfigError naming ``setting``.

    The experiment is a model-training one (:data:`EXPERIMENT_KIND_TAG`), also
    one created before proxynas tagged them; a kind someone chose is kept.
    Without ``create`` a missing experiment gives ``(client, None)``.
    """
    check_tracking_uri(tracking_uri, setting)
    from mlflow.tracking import MlflowClient

    with sqlite_lock(tracking_uri), sqlite_errors(tracking_uri, setting, _TRACKING_FIX):
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            if EXPERIMENT_KIND_TAG not in exp.tags:
                client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
            return client, exp.experiment_id
        if not create:
            return client, None
        return client, client.create_experiment(experiment, artifact_location=artifact_root(tracking_uri),
                                                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})


def is_rank_column(metric: str) -> bool:
    """Whether ``metric`` is one of the report's rank metrics shown as a runs-table column."""
    return "." in metric and metric.rsplit(".", 1)[1] in RANK_COLUMNS


def _view_columns(value: str | None) -> list[str]:
    """The columns of a saved view's tag value (none if it is absent or not ours to read)."""
    try:
        columns = json.loads(json.loads(value)["state"]).get("selectedColumns", []) if value else []
    except (ValueError, TypeError, KeyError, AttributeError):
        return []
    return [c for c in columns if isinstance(c, str)] if isinstance(columns, list) else []


def show_rank_columns(client, experiment_id: str, metrics: Sequence[str]) -> None:
    """Add ``metrics`` (newest first) to the experiment's saved runs-table view, created if needed.

    The view is the envelope MLflow 3.17's UI writes when a user saves a view
    of the runs table (``{name, createdAt, updatedAt, state}``, the state a
    JSON string) under ``mlflow.sharedViewState.<key>``; the UI lists it among
    the saved views, and ``?viewStateShareKey=<key>`` opens it
    (:func:`runs_table_url`). Its state selects only columns, so a user's
    filter and sort stay as they are.
    """
    key = VIEW_TAG_PREFIX + RANKS_VIEW
    value = client.get_experiment(experiment_id).tags.get(key)
    old = _view_columns(value)
    columns = list(dict.fromkeys([f"metrics.`{m}`" for m in metrics] + old))[:MAX_VIEW_COLUMNS]
    if value and columns == old:
        return
    now = int(time.time() * 1000)
    try:
        created = int(json.loads(value)["createdAt"])
    except (ValueError, TypeError, KeyError):
        created = now
    view = {"name": "proxynas: rank metrics", "createdAt": created, "updatedAt": now,
            "state": json.dumps({"selectedColumns": columns})}
    client.set_experiment_tag(experiment_id, key, json.dumps(view))


def runs_table_url(base: str, experiment_id: str, tags: Mapping[str, str] = {}) -> str:
    """The UI page of ``experiment_id``'s runs table on the server at ``base`` (``http://host:port``).

    MLflow 3.17's UI takes a page's kind from its ``workflowType`` setting
    (kept in the browser, GenAI unless changed) rather than from the
    experiment's kind tag, so the URL asks for the model-training pages; given
    the experiment's ``tags``, it opens the saved rank-metrics view if there is one.
    """
    query = "workflowType=machine_learning"
    if VIEW_TAG_PREFIX + RANKS_VIEW in tags:
        query += f"&viewStateShareKey={RANKS_VIEW}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


@functools.lru_cache(maxsize=1)
def _namespace() -> tuple[str, str] | None:
    """``(boot id, pid namespace)`` of this process (None without Linux's /proc)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return boot, os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot); None if there is none or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else fields[19]


@dataclass(frozen=True)
class Owner:
    """The process that owns an MLflow run, recorded in the run's tags.

    ``process`` is ``<boot id>/<pid namespace>/<start ticks>`` on Linux ("" where
    there is no /proc): a pid alone names another process once the old one is
    gone, so a run is only taken for alive when the pid still has the same
    start time in the same boot; the pid namespace tells apart containers that
    share a host name, whose pids cannot be checked from each other.
    """

    host: str
    pid: int
    process: str = ""

    @classmethod
    def current(cls) -> "Owner":
        """This process (read at each call: a forked child is its own owner)."""
        pid = os.getpid()
        ns, ticks = _namespace(), _start_ticks(pid)
        return cls(socket.gethostname(), pid, f"{ns[0]}/{ns[1]}/{ticks}" if ns and ticks else "")

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> "Owner | None":
        """The owner named by a run's ``tags`` (None for a run without them)."""
        try:
            return cls(tags[HOST_TAG], int(tags[PID_TAG]), tags.get(PROCESS_TAG, ""))
        except (KeyError, ValueError):
            return None

    def tags(self) -> dict[str, str]:
        return {HOST_TAG: self.host, PID_TAG: str(self.pid), PROCESS_TAG: self.process}

    def alive(self) -> bool | None:
        """Whether the owner still runs; None when this process cannot tell (another host or container)."""
        if self.host != socket.gethostname():
            return None
        parts, ns = self.process.split("/"), _namespace()
        if len(parts) == 3 and ns is not None:
            boot, pid_ns, ticks = parts
            if boot != ns[0]:
                return False  # the host rebooted since the run started
            if pid_ns != ns[1]:
                return None
            return _start_ticks(self.pid) == ticks
        try:  # no /proc: whether the pid exists is all there is to know
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def _params(data: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:6000] for k, v in flatten(data).items()}


def _end_status(error: BaseException) -> str:
    """MLflow status of a run ended by ``error``: Ctrl-C kills a run, anything else fails it."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


class MLflowHook(Hook):
    """Logs a pipeline run to MLflow (``proxynas ui --tracking-uri <uri>`` to browse).

    Every run it creates carries its owner's tags (:class:`Owner`); starting a
    top-level run first ends the runs that killed processes left RUNNING
    (:meth:`end_dead_runs`) and links an unfinished run of the same name
    (``proxynas.resumes``).
    """

    def __init__(
        self,
        tracking_uri: str = DEFAULT_TRACKING_URI,
        experiment: str = "proxynas",
        *,
        tracked: Callable[[str], bool] = lambda name: True,
        setting: str = TRACKING_SETTING,
        stale_after: float = STALE_AFTER,
        columns: Callable[[str], bool] = is_rank_column,
    ) -> None:
        """``tracked(output_name)`` says which outputs of a *cached* stage to load and log
        again (so a re-run's MLflow run is complete without loading big cached data).
        ``setting`` names where ``tracking_uri`` came from in errors; ``stale_after``
        (seconds) is when a RUNNING run whose owner cannot be checked counts as dead;
        ``columns(metric)`` says which metrics of a top-level run the experiment's
        saved runs-table view shows (:func:`show_rank_columns`)."""
        self.client, self.experiment_id = open_experiment(tracking_uri, experiment, setting)
        self.tracking_uri = tracking_uri
        self.tracked = tracked
        self.stale_after = stale_after
        self.columns = columns
        self.parent_id: str | None = None
        self._stage_runs: dict[str, str] = {}
        #: the top-level runs this hook started: the runs users compare, so their tables and
        #: rank metrics are shown where the UI shows such things
        self._top_runs: set[str] = set()

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
            self.client.set_terminated(self.parent_id, _end_status(error))

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
            self.client.set_tag(run_id, ERROR_TAG, str(error)[:5000])
            self.client.set_terminated(run_id, _end_status(error))

    # -- logging, also used by search and tune ---------------------------
    def start_run(self, name: str, tags: Mapping[str, str] = {}, parent: str | None = None) -> str:
        """A new run of this hook's experiment, nested under run ``parent`` if given; its id.

        End it with :meth:`end_run`. A top-level run (a pipeline run, a search or
        tuning session) first ends the runs dead processes left RUNNING, and is
        tagged ``proxynas.resumes`` when the newest earlier top-level run of the
        same ``name`` did not finish.
        """
        tags = {**tags, **Owner.current().tags()}
        if parent:
            tags[PARENT_TAG] = parent
        else:
            self.end_dead_runs()
            previous = self.unfinished_run(name)
            if previous is not None:
                tags[RESUMES_TAG] = previous
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        if not parent:
            self._top_runs.add(run_id)
        return run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def end_dead_runs(self) -> list[str]:
        """End, as KILLED, the RUNNING runs of this experiment whose process is gone; their ids.

        A run is ended when its owner (:class:`Owner`) ran on this host and is no
        longer alive (pid gone, a zombie, reused by a younger process, or the host
        rebooted). A run whose owner cannot be checked from here -- another host,
        another container, or no owner tags -- is ended only once it started more
        than ``stale_after`` seconds ago. The end time is now (when the process
        died is unknown) and ``proxynas.error`` says who ended the run and why.
        """
        now, me, ended = time.time(), Owner.current(), []
        for run in self._running_runs():
            owner = Owner.of(run.data.tags)
            alive = owner.alive() if owner is not None else None
            if alive is None:
                age = now - run.info.start_time / 1000
                if age < self.stale_after:
                    continue
                why = (f"still RUNNING {age / 86400:.1f} days after it started and its process "
                       f"({owner or 'not recorded'}) cannot be checked from {me.host}")
            elif alive:
                continue
            else:
                why = f"its process ({owner}) is gone without ending it (killed?)"
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            self.client.set_tag(run.info.run_id, ERROR_TAG, f"{why}; marked KILLED by {me} at {stamp}")
            self.client.set_terminated(run.info.run_id, "KILLED", end_time=int(now * 1000))
            ended.append(run.info.run_id)
        return ended

    def _running_runs(self) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'",
                                           max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def unfinished_run(self, name: str) -> str | None:
        """The id of the newest top-level run named ``name`` if it ended KILLED or FAILED (else None).

        A new run of that name retries it (completed stages come from the cache),
        so :meth:`start_run` links the two. Names holding both quote characters
        cannot be put in an MLflow filter and are never linked.
        """
        quote = next((q for q in ("'", '"') if q not in name), None)
        if quote is None:
            return None
        runs = self.client.search_runs([self.experiment_id], f"attributes.run_name = {quote}{name}{quote}",
                                       order_by=["attributes.start_time DESC"], max_results=100)
        top = [run for run in runs if PARENT_TAG not in run.data.tags]
        if top and top[0].info.status in ("KILLED", "FAILED"):
            return top[0].info.run_id
        return None

    def log_params(self, run_id: str, data: Mapping[str, Any]) -> None:
        """The flattened ``data`` as params of ``run_id`` (values cut to MLflow's limit)."""
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _params(data).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])

    def log_metrics(self, run_id: str, values: Mapping[str, float]) -> None:
        """Finite scalar ``values`` as metrics of ``run_id`` at step 0.

        Those of a top-level run that ``columns`` picks become columns of the
        experiment's saved runs-table view.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in values.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        ]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        shown = [m.key for m in metrics if self.columns(m.key)] if run_id in self._top_runs else []
        if shown:
            show_rank_columns(self.client, self.experiment_id, shown)

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

    def log_table(self, run_id: str, table: Table) -> None:
        """``table`` as the MLflow table artifact ``<name>.json`` of ``run_id``.

        The UI shows such an artifact as a table, and ``mlflow.load_table``
        reads it back across runs. MLflow appends to a table logged twice under
        one name: log one per run and name.
        """
        columns = list(dict.fromkeys(k for row in table.rows for k in row))
        self.client.log_table(run_id, {c: [row.get(c) for row in table.rows] for c in columns},
                              f"{table.name}.json")

    def log_output(self, run_id: str, value: Any) -> None:
        """A typed stage output (Metrics, Table, Figure, Tensors, or a mapping of them) on ``run_id``.

        A table is ``<name>.csv``; on a top-level run also an MLflow table (:meth:`log_table`)
        unless it is empty or longer than :data:`MAX_TABLE_ROWS`.
        """
        if isinstance(value, Metrics):
            self.log_metrics(run_id, value.values)
        elif isinstance(value, Table):
            self.client.log_text(run_id, value.to_csv(), f"{value.name}.csv")
            if 0 < len(value.rows) <= MAX_TABLE_ROWS and run_id in self._top_runs:
                self.log_table(run_id, value)
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
