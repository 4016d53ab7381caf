"""``proxynas ui``: the MLflow UI (or optuna-dashboard) started on a store, found through its REST API,
and stopped with everything it started; bad input is one line before any server starts."""

import importlib.util
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from proxynas.artifacts import Metrics, Table
from proxynas.cli import main
from proxynas.engine import Cache, Graph, Runner, Stage
from proxynas.ledger import Ledger
from proxynas.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, RANKS_VIEW, VIEW_TAG_PREFIX, MLflowHook

ROOT = Path(__file__).resolve().parents[1]
#: a guard against a hung server, not a timing assertion: MLflow's server imports its whole
#: app before it listens, which takes tens of seconds on a busy two-core machine
STARTUP_GUARD = 300


def _report():
    return {"metrics": Metrics({"dm.spearman": 0.5, "dm.kendall": 0.4, "dm.topk_precision": 0.25}),
            "rank_table": Table("rank_table", [{"proxy": "dm", "spearman": 0.5, "kendall": 0.4}])}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding one tracked pipeline run ("quick") of a report-like stage: ``(uri, parent run id)``."""
    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    hook = MLflowHook(uri, "proxynas")
    graph = Graph([Stage("report", _report, outputs=("metrics", "rank_table"))])
    Runner(graph, Cache(tmp / "cache"), hooks=[hook]).run(run_info={"name": "quick"})
    return uri, hook.parent_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _as_in_a_terminal() -> None:
    # A suite started in the background (`make test &`, nohup) ignores SIGINT, and an ignored
    # signal stays ignored across exec: the child would never see the Ctrl-C this test sends.
    # A command run in a terminal starts with SIGINT at its default, as here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args, cwd) -> tuple[subprocess.Popen, str]:
    """``python -m proxynas ui ARGS`` and the page it prints once its server answers."""
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.Popen([sys.executable, "-m", "proxynas", "ui", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_as_in_a_terminal)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=STARTUP_GUARD)
            assert line is not None, f"proxynas ui exited ({proc.wait()}): {proc.stderr.read()}"
            if line.strip().startswith("http://"):
                return proc, line.strip()
    except BaseException:
        _stop(proc, signal.SIGTERM)
        raise


def _stop(proc: subprocess.Popen, sig) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()  # its server would be left running: the test fails below
        return proc.wait()


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _post(url: str, body: dict):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_proxynas_ui_serves_the_store_and_ctrl_c_stops_its_server(store, tmp_path):
    uri, parent_id = store
    port = _free_port()
    proc, page = _start(["--tracking-uri", uri, "--port", str(port)], tmp_path)
    try:
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        experiment = _get(f"{api}/experiments/get-by-name?experiment_name=proxynas")["experiment"]
        tags = {t["key"]: t["value"] for t in experiment["tags"]}
        assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING == "custom_model_development"
        assert page == (f"http://127.0.0.1:{port}/#/experiments/{experiment['experiment_id']}/runs"
                        f"?workflowType=machine_learning&viewStateShareKey={RANKS_VIEW}")
        view = json.loads(tags[VIEW_TAG_PREFIX + RANKS_VIEW])
        assert json.loads(view["state"])["selectedColumns"] == ["metrics.`dm.spearman`", "metrics.`dm.kendall`"]

        runs = _post(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                            "filter": "attributes.run_name = 'quick'"})["runs"]
        assert [r["info"]["run_id"] for r in runs] == [parent_id]
        metrics = {m["key"]: m["value"] for m in runs[0]["data"]["metrics"]}
        assert metrics["dm.spearman"] == 0.5 and metrics["dm.kendall"] == 0.4
        files = {f["path"] for f in _get(f"{api}/artifacts/list?run_id={parent_id}")["files"]}
        assert {"rank_table.csv", "rank_table.json"} <= files
    finally:
        code = _stop(proc, signal.SIGINT)  # what Ctrl-C sends
    assert code == 0, proc.stderr.read()
    assert "stopped the MLflow server" in proc.stderr.read()
    assert _refused(port)  # the server (uvicorn, a child of `mlflow server`) is gone too
    assert (Path(uri[len("sqlite:///"):]).parent / "mlflow-ui.log").is_file()


@pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None,
                    reason="optuna-dashboard is an optional extra: pip install 'proxynas[ui]'")
def test_proxynas_ui_optuna_serves_the_ledger_and_sigterm_stops_it(tmp_path):
    storage = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(storage).record("quick/dm", [{"arch": "a", "code": (0,), "value": 1.0}], cardinalities=(2,))
    port = _free_port()
    proc, page = _start(["--optuna", "--storage", storage, "--port", str(port)], tmp_path)
    try:
        assert page == f"http://127.0.0.1:{port}/dashboard"
        studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["quick/dm"]
    finally:
        code = _stop(proc, signal.SIGTERM)  # what `kill` sends: the dashboard must not outlive us
    assert code == 0, proc.stderr.read()
    assert _refused(port)


# -- bad input: one line, exit 2, nothing started -----------------------------------------
def _one_line(capsys, argv) -> str:
    assert main(["ui", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_missing_store_or_experiment_is_one_line_with_the_fix(store, tmp_path, capsys):
    uri, _ = store
    missing = f"sqlite:///{tmp_path / 'nothing' / 'mlflow.db'}"
    err = _one_line(capsys, ["--tracking-uri", missing, "--port", str(_free_port())])
    assert f"no MLflow store at {tmp_path / 'nothing' / 'mlflow.db'}" in err and "proxynas run PIPELINE" in err
    assert not (tmp_path / "nothing" / "mlflow.db").exists()  # looking created nothing
    err = _one_line(capsys, ["--tracking-uri", uri, "--experiment", "nope", "--port", str(_free_port())])
    assert "has no experiment 'nope' (it has: Default, proxynas)" in err and "--experiment NAME" in err
    err = _one_line(capsys, ["--tracking-uri", "http://localhost:5000"])
    assert "is a tracking server already" in err


def test_a_port_in_use_or_not_a_port_is_one_line_with_the_fix(store, capsys):
    uri, _ = store
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = _one_line(capsys, ["--tracking-uri", uri, "--port", str(port)])
    assert f"port {port} on 127.0.0.1 is in use" in err and "--port" in err
    assert "is not a TCP port" in _one_line(capsys, ["--tracking-uri", uri, "--port", "0"])
    assert "invalid int value" in _one_line(capsys, ["--port", "http"])


def test_optuna_options_are_checked(tmp_path, capsys, monkeypatch):
    assert "add --optuna" in _one_line(capsys, ["--storage", f"sqlite:///{tmp_path / 'ledger.db'}"])
    assert "drop them" in _one_line(capsys, ["--optuna", "--tracking-uri", "sqlite:///x.db"])
    if importlib.util.find_spec("optuna_dashboard") is not None:
        err = _one_line(capsys, ["--optuna", "--storage", f"sqlite:///{tmp_path / 'none.db'}"])
        assert f"no Optuna storage at {tmp_path / 'none.db'}" in err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "optuna_dashboard" else find_spec(name, *a))
    err = _one_line(capsys, ["--optuna"])
    assert "optuna-dashboard, which is not installed; pip install 'proxynas[ui]'" in err
