"""MLflow tracking: the hook's public logging methods, the Optuna trial callback built on them,
and a store that stays usable: checked early, opened by several processes at once, and
cleared of the runs killed processes left RUNNING."""

import json
import math
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from proxynas.artifacts import Metrics, Table
from proxynas.cli import main
from proxynas.engine import Cache, Graph, Runner, Stage
from proxynas import tracking
from proxynas.errors import ConfigError
from proxynas.tracking import (
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    MAX_VIEW_COLUMNS,
    PID_TAG,
    RANKS_VIEW,
    RESUMES_TAG,
    VIEW_TAG_PREFIX,
    MLflowHook,
    MLflowTrialCallback,
    Owner,
    _start_ticks,
    check_tracking_uri,
    open_experiment,
    runs_table_url,
)

CTX = multiprocessing.get_context("fork")
QUICKSTART = Path(__file__).resolve().parents[1] / "pipelines" / "quickstart.yaml"


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
    # a top-level run's table is also an MLflow table (the UI's table viewer)
    assert [a.path for a in client.list_artifacts(parent)] == ["trials.csv", "trials.json"]
    assert (tmp_path / "deep" / "store" / "artifacts").is_dir()  # artifacts beside the database


# -- what the MLflow UI shows: a model-training experiment, rank columns, table artifacts ----
def test_experiments_are_model_training_ones_new_or_old_and_a_chosen_kind_is_kept(tmp_path, empty_store):
    uri = _copy(empty_store, tmp_path / "store")
    client = MlflowClient(tracking_uri=uri)
    old = client.create_experiment("old")  # as proxynas created them before: no kind
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    fresh = MLflowHook(uri, "fresh").experiment_id
    assert MLflowHook(uri, "old").experiment_id == old
    assert open_experiment(uri, "chosen")[1] == chosen
    kinds = {e: client.get_experiment(e).tags.get(EXPERIMENT_KIND_TAG) for e in (fresh, old, chosen)}
    assert kinds == {fresh: "custom_model_development", old: "custom_model_development", chosen: "genai_development"}
    assert open_experiment(uri, "absent", create=False)[1] is None
    assert client.get_experiment_by_name("absent") is None


def _view(client, experiment_id) -> tuple[dict, list[str]]:
    view = json.loads(client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + RANKS_VIEW])
    return view, json.loads(view["state"])["selectedColumns"]


def test_a_top_level_run_gets_mlflow_tables_and_its_rank_metrics_as_runs_table_columns(tmp_path, empty_store,
                                                                                       monkeypatch):
    uri = _copy(empty_store, tmp_path / "store")
    tracker = MLflowHook(uri, "exp")
    client, exp = tracker.client, tracker.experiment_id
    parent = tracker.start_run("pipeline")
    child = tracker.start_run("report", parent=parent)
    rows = [{"proxy": "dm", "spearman": 0.5, "extra": "x"}, {"proxy": "few", "spearman": math.nan, "extra": None}]
    for run in (child, parent):
        tracker.log_output(run, {"rank_table": Table("rank_table", rows), "empty": Table("empty", [])})
        tracker.log_output(run, Metrics({"dm.spearman": 0.5, "dm.kendall": 0.4, "dm.topk_precision": 1.0,
                                         "reference.mean": 90.0}))
    assert [a.path for a in client.list_artifacts(child)] == ["empty.csv", "rank_table.csv"]  # a stage run: CSV
    assert [a.path for a in client.list_artifacts(parent)] == ["empty.csv", "rank_table.csv", "rank_table.json"]
    table = json.loads(Path(client.download_artifacts(parent, "rank_table.json", str(tmp_path))).read_text())
    assert table["columns"] == ["proxy", "spearman", "extra"]
    assert table["data"] == [["dm", 0.5, "x"], ["few", None, None]]  # NaN and None are JSON nulls
    assert json.loads(client.get_run(parent).data.tags["mlflow.loggedArtifacts"]) == [
        {"path": "rank_table.json", "type": "table"}]
    monkeypatch.setattr(tracking, "MAX_TABLE_ROWS", 1)  # the UI would load a longer table whole: CSV only
    tracker.log_output(parent, Table("long", rows))
    assert {"long.csv", "long.json"} & {a.path for a in client.list_artifacts(parent)} == {"long.csv"}

    view, columns = _view(client, exp)
    assert columns == ["metrics.`dm.spearman`", "metrics.`dm.kendall`"]  # the parent's, not the stage run's
    assert view["name"] == "proxynas: rank metrics" and view["createdAt"] == view["updatedAt"]
    # a later run's rows come first; a row of both runs is not repeated; the view stays one view
    later = tracker.start_run("pipeline 2")
    tracker.log_metrics(later, {"kfs.spearman": 0.1, "dm.spearman": 0.2, "kfs.kendall": 0.1})
    again, columns = _view(client, exp)
    assert columns == ["metrics.`kfs.spearman`", "metrics.`dm.spearman`", "metrics.`kfs.kendall`",
                       "metrics.`dm.kendall`"]
    assert again["createdAt"] == view["createdAt"] <= again["updatedAt"]
    tracker.log_metrics(later, {f"row{i}.spearman": 0.0 for i in range(MAX_VIEW_COLUMNS + 5)})
    assert _view(client, exp)[1] == [f"metrics.`row{i}.spearman`" for i in range(MAX_VIEW_COLUMNS)]
    assert [k for k in client.get_experiment(exp).tags if k.startswith(VIEW_TAG_PREFIX)] == [
        VIEW_TAG_PREFIX + RANKS_VIEW]


def test_runs_table_url_asks_for_the_training_pages_and_the_rank_view_when_there_is_one():
    base = "http://localhost:5000/"
    assert runs_table_url(base, "3") == "http://localhost:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert runs_table_url(base, "3", {VIEW_TAG_PREFIX + RANKS_VIEW: "{}"}) == (
        "http://localhost:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=proxynas-ranks")


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


# -- a store that cannot be used: one line, before MLflow's two minutes of retries --------
@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its schema and no experiment; tests copy it (creating one takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}")
    return path


def _copy(store: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(store, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def test_an_unusable_store_is_one_line_naming_the_setting_and_fix(tmp_path, empty_store):
    (tmp_path / "dir.db").mkdir()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\xde\xad" * 4000)
    damaged = Path(_copy(empty_store, tmp_path / "damaged")[len("sqlite:///"):])
    data = bytearray(damaged.read_bytes())
    data[4096:] = bytes((b * 7 + 13) & 0xFF for b in data[4096:])  # the header stays intact
    damaged.write_bytes(bytes(data))
    cases = {
        f"sqlite:///{tmp_path / 'dir.db'}": "is a folder, not a database file; point it at a writable file, "
                                           "e.g. --tracking-uri sqlite:///",
        f"sqlite:///{garbage}": f"{garbage} is not a readable SQLite database (corrupted or overwritten); "
                                f"move it aside (mv {garbage} {garbage}.corrupt) or delete it",
        f"sqlite:///{damaged}": f"{damaged} is not a readable SQLite database",
    }
    for uri, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            MLflowHook(uri, "exp")
        message = str(info.value)
        assert message.startswith("run.tracking_uri (--tracking-uri) sqlite:///") and expected in message, message
        assert "\n" not in message
    with pytest.raises(ConfigError, match="is a folder"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'dir.db'}")
    check_tracking_uri(f"sqlite:///{damaged}")  # the header is intact: only opening it tells
    check_tracking_uri("http://localhost:5000")  # a server is checked when the hook connects


def test_proxynas_run_with_an_unusable_store_exits_2_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").write_bytes(b"garbage" * 100)
    code = main(["run", str(QUICKSTART), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "--set", "run.device=cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: run.tracking_uri (--tracking-uri) "), err
    cache = tmp_path / ".proxynas" / "cache"
    assert "move it aside" in err and not (cache.exists() and any(cache.iterdir()))  # no stage ran


# -- several processes opening a fresh store at once ------------------------------------
def _open(uri, barrier, out):
    barrier.wait()
    try:
        out.put(open_experiment(uri, "exp")[1])
    except Exception as exc:  # the test shows what went wrong in the child
        out.put(f"{type(exc).__name__}: {str(exc)[:300]}")


def test_three_processes_open_a_fresh_store_at_once(tmp_path):
    """Without the lock MLflow's schema creation races ("table ... already exists") and so does
    creating the experiment."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    barrier, out = CTX.Barrier(3), CTX.Queue()
    procs = [CTX.Process(target=_open, args=(uri, barrier, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    ids = [out.get(timeout=5) for _ in procs]
    assert len(set(ids)) == 1 and ids[0].isdigit(), ids
    assert sorted(e.name for e in MlflowClient(tracking_uri=uri).search_experiments()) == ["Default", "exp"]


# -- runs of killed processes ---------------------------------------------------------
def _graph(block=None) -> Graph:
    """Two stages; with an event, the second sets it and then hangs (until its process is killed)."""

    def slow(x):
        if block is not None:
            block.set()
            time.sleep(600)
        return x + 1

    return Graph([Stage("first", lambda: 1, outputs=("x",)), Stage("second", slow, inputs=("x",), outputs=("y",))])


def _tracked_run(uri, cache, block) -> None:
    Runner(_graph(block), Cache(cache), hooks=[MLflowHook(uri, "exp")]).run(run_info={"name": "quick"})


def test_the_runs_of_a_killed_process_are_ended_and_its_rerun_links_them(tmp_path, empty_store):
    uri = _copy(empty_store, tmp_path / "store")
    block = CTX.Event()
    child = CTX.Process(target=_tracked_run, args=(uri, tmp_path / "cache", block))
    child.start()
    try:
        assert block.wait(120), "the child never reached its second stage"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("exp").experiment_id
    old = {r.info.run_name: r for r in client.search_runs([exp])}
    assert {n: r.info.status for n, r in old.items()} == {"quick": "RUNNING", "first": "FINISHED", "second": "RUNNING"}
    assert {r.data.tags[PID_TAG] for r in old.values()} == {str(child.pid)}

    before = time.time() * 1000
    hook = MLflowHook(uri, "exp")
    Runner(_graph(), Cache(tmp_path / "cache"), hooks=[hook]).run(run_info={"name": "quick"})
    for name in ("quick", "second"):
        run = client.get_run(old[name].info.run_id)
        assert run.info.status == "KILLED" and run.info.end_time >= before
        assert f"its process (pid {child.pid} on " in run.data.tags[ERROR_TAG]
        assert f"marked KILLED by pid {os.getpid()}" in run.data.tags[ERROR_TAG]
    assert client.get_run(old["first"].info.run_id).info.status == "FINISHED"  # untouched
    new = client.get_run(hook.parent_id)
    assert new.info.status == "FINISHED" and new.data.tags[RESUMES_TAG] == old["quick"].info.run_id
    assert new.data.tags[PID_TAG] == str(os.getpid())
    again = MLflowHook(uri, "exp")
    again_id = again.start_run("quick")  # the newest "quick" finished: nothing to resume
    assert RESUMES_TAG not in client.get_run(again_id).data.tags and again.end_dead_runs() == []


def _zombie() -> Owner:
    """The owner tags of a child that has exited but is not reaped yet: its pid exists, with its start time."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(read, 1)
        os._exit(0)
    me = Owner.current()
    owner = Owner(me.host, pid, me.process.rsplit("/", 1)[0] + "/" + _start_ticks(pid))
    os.write(write, b"x")
    while _start_ticks(pid) is not None:  # None once it is a zombie
        time.sleep(0.02)
    os.close(read)
    os.close(write)
    return owner


@pytest.mark.skipif(not Owner.current().process, reason="needs Linux's /proc to tell a process's start time")
def test_runs_whose_owner_cannot_be_checked_are_ended_only_when_stale(tmp_path, empty_store):
    uri = _copy(empty_store, tmp_path / "store")
    hook = MLflowHook(uri, "exp", stale_after=3600)
    me = Owner.current()
    boot, pid_ns, _ = me.process.split("/")
    zombie = _zombie()
    owners = {  # run name: (owner tags, whether the run is left RUNNING)
        "live here": (me.tags(), True),
        "zombie": (zombie.tags(), False),
        "pid reused": (Owner(me.host, me.pid, f"{boot}/{pid_ns}/1").tags(), False),
        "rebooted since": (Owner(me.host, me.pid, f"another-boot/{pid_ns}/1").tags(), False),
        "other container, recent": (Owner(me.host, 1, f"{boot}/pid:[1]/1").tags(), True),
        "other host, recent": (Owner("elsewhere", 1).tags(), True),
        "other host, old": (Owner("elsewhere", 1).tags(), False),
        "no owner, recent": ({}, True),
        "no owner, old": ({}, False),
    }
    now_ms, ids = int(time.time() * 1000), {}
    for name, (tags, _) in owners.items():
        start = now_ms - (2 * 3600 * 1000 if name.endswith("old") else 60 * 1000)
        ids[name] = hook.client.create_run(hook.experiment_id, start_time=start, tags=tags, run_name=name).info.run_id
    try:
        ended = set(hook.end_dead_runs())
    finally:
        os.waitpid(zombie.pid, 0)
    assert ended == {ids[n] for n, (_, lives) in owners.items() if not lives}
    for name, (_, lives) in owners.items():
        run = hook.client.get_run(ids[name])
        assert run.info.status == ("RUNNING" if lives else "KILLED"), name
        assert (run.info.end_time is None and ERROR_TAG not in run.data.tags) if lives else run.info.end_time
    assert "cannot be checked from" in hook.client.get_run(ids["other host, old"]).data.tags[ERROR_TAG]
