import sys

import pytest

from proxynas.engine import Graph, Stage
from proxynas.engine.parallel import plan_fan_out, run_branches


def f(**kwargs):
    return None


def stage(name, inputs=(), outputs=()):
    return Stage(name, f, inputs=tuple(inputs), outputs=tuple(outputs))


def pipeline_like():
    """load -> sample; load -> distill_a -> proxy_a; load -> distill_b -> proxy_b; baseline; report."""
    return Graph([
        stage("load", outputs=["data"]),
        stage("sample", outputs=["archs"]),
        stage("distill_a", inputs=["data"], outputs=["sum_a"]),
        stage("proxy_a", inputs=["archs", "data", "sum_a"], outputs=["a"]),
        stage("distill_b", inputs=["data"], outputs=["sum_b"]),
        stage("proxy_b", inputs=["archs", "data", "sum_b"], outputs=["b"]),
        stage("baseline", inputs=["archs"], outputs=["c"]),
        stage("report", inputs=["archs", "a", "b", "c"], outputs=["report"]),
    ])


def test_plan_runs_shared_stages_first_and_each_row_alone():
    g = pipeline_like()
    plan = plan_fan_out(g, [s.name for s in g.order()], sink="report")
    # sample feeds the report directly but every row needs it: shared, not a branch
    assert plan.shared == ("load", "sample")
    assert plan.branches == ("proxy_a", "proxy_b", "baseline")


def test_plan_skips_cached_stages():
    g = pipeline_like()
    pending = ["distill_b", "proxy_b", "baseline", "report"]  # load, sample and row a are cached
    plan = plan_fan_out(g, pending, sink="report")
    assert plan.shared == ()
    assert plan.branches == ("proxy_b", "baseline")
    # a private pending upstream stays in its branch
    assert "distill_b" not in plan.shared


def test_plan_default_sink_is_the_last_stage():
    g = pipeline_like()
    assert plan_fan_out(g, ["proxy_a", "proxy_b"]).branches == ("proxy_a", "proxy_b")


def _child(code):
    return [sys.executable, "-c", code]


def test_run_branches_runs_each_logs_and_reports_failures(tmp_path):
    import io

    stream = io.StringIO()
    codes = {"ok": "print('step 1'); print('row ok')", "bad": "import sys; print('boom: loss is NaN'); sys.exit(3)"}
    results = run_branches(["ok", "bad"], lambda name: _child(codes[name]), jobs=2, log_dir=tmp_path, stream=stream)
    assert [r.name for r in results] == ["ok", "bad"]
    ok, bad = results
    assert ok.ok and ok.last_line() == "row ok" and (tmp_path / "ok.log").read_text().startswith("step 1")
    assert not bad.ok and bad.returncode == 3 and bad.last_line() == "boom: loss is NaN"
    text = stream.getvalue()
    assert "ok done" in text and "bad FAILED (exit 3): boom: loss is NaN" in text


def test_run_branches_keeps_at_most_jobs_running(tmp_path):
    # each child marks itself running, waits, and fails if more than `jobs` marks exist
    marks = tmp_path / "marks"
    marks.mkdir()
    code = (
        "import os, sys, time; d = sys.argv[1]; m = os.path.join(d, sys.argv[2]); open(m, 'w').close();"
        "time.sleep(0.4); n = len(os.listdir(d)); os.remove(m); sys.exit(0 if n <= 2 else 10 + n)"
    )
    names = [f"row{i}" for i in range(5)]
    results = run_branches(names, lambda name: [sys.executable, "-c", code, str(marks), name], jobs=2,
                           log_dir=tmp_path / "logs", stream=open("/dev/null", "w"))
    assert [r.returncode for r in results] == [0] * 5
    with pytest.raises(ValueError):
        run_branches(names, lambda name: [], jobs=0, log_dir=tmp_path)
