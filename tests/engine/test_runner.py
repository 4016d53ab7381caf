import io
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from proxynas.engine import Cache, ConsoleHook, Graph, Hook, Runner, Stage, StageOutputError
from proxynas.errors import GraphError, ProxynasError

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Scale:
    factor: float


def build(calls: Counter, params=None):
    """root -> (left, right) -> join ; plus an independent sibling."""
    params = {"left": Scale(2.0), "right": Scale(3.0), **(params or {})}

    def root(n):
        calls["root"] += 1
        return torch.arange(n, dtype=torch.float32)

    def left(base, params):
        calls["left"] += 1
        return base * params.factor

    def right(base, params):
        calls["right"] += 1
        return {"r": base * params.factor, "r_sum": float((base * params.factor).sum())}

    def join(l, r, r_sum):
        calls["join"] += 1
        return {"total": float(l.sum()) + float(r.sum()), "check": r_sum}

    def sibling(n):
        calls["sibling"] += 1
        return n * 10

    stages = [
        Stage("root", root, inputs=("n",), outputs=("base",)),
        Stage("left", left, inputs=("base",), outputs=("l",), params=params["left"]),
        Stage("right", right, inputs=("base",), outputs=("r", "r_sum"), params=params["right"]),
        Stage("join", join, inputs=("l", "r", "r_sum"), outputs=("total", "check")),
        Stage("sibling", sibling, inputs=("n",), outputs=("ten_n",)),
    ]
    return Graph(stages, external_inputs=["n"])


def test_second_run_recomputes_nothing(tmp_path):
    calls = Counter()
    out = Runner(build(calls), Cache(tmp_path)).run({"n": 4})
    assert out["total"] == 5 * 6.0 and out["ten_n"] == 40
    assert calls == Counter(root=1, left=1, right=1, join=1, sibling=1)
    calls.clear()
    out = Runner(build(calls), Cache(tmp_path)).run({"n": 4})
    assert calls == Counter()
    assert out["total"] == 30.0 and out["check"] == 18.0
    assert torch.equal(out["base"], torch.arange(4.0))


def test_changed_params_recompute_only_that_stage_and_downstream(tmp_path):
    calls = Counter()
    Runner(build(calls), Cache(tmp_path)).run({"n": 4})
    calls.clear()
    out = Runner(build(calls, {"left": Scale(5.0)}), Cache(tmp_path)).run({"n": 4})
    assert calls == Counter(left=1, join=1)
    assert out["total"] == 5 * 6.0 + 3 * 6.0
    # a different external input invalidates everything that reads it
    calls.clear()
    Runner(build(calls, {"left": Scale(5.0)}), Cache(tmp_path)).run({"n": 5})
    assert set(calls) == {"root", "left", "right", "join", "sibling"}


def test_cached_outputs_are_loaded_lazily(tmp_path):
    calls = Counter()
    Runner(build(calls), Cache(tmp_path)).run({"n": 4})

    class CountingCache(Cache):
        loaded: list = []

        def get(self, stage_name, key):
            self.loaded.append(stage_name)
            return super().get(stage_name, key)

    cache = CountingCache(tmp_path)
    out = Runner(build(calls, {"left": Scale(5.0)}), cache).run({"n": 4})
    # left runs (needs base: root loaded), join runs (needs r, r_sum: right loaded); sibling untouched
    assert cache.loaded == ["root", "right"]
    assert not out.is_loaded("ten_n") and out.is_loaded("l") and out.is_loaded("total")
    assert "ten_n" in out and not out.is_loaded("ten_n")  # membership does not load
    assert out["ten_n"] == 40
    assert cache.loaded == ["root", "right", "sibling"]


def test_targets_run_only_needed_stages(tmp_path):
    calls = Counter()
    out = Runner(build(calls), Cache(tmp_path)).run({"n": 3}, targets=["left"])
    assert calls == Counter(root=1, left=1)
    assert set(out) == {"base", "l"}


CRASH_SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from proxynas.engine import Cache, Graph, Runner, Stage

work = Path({work!r})

def log(name):
    with open(work / "calls.txt", "a") as f:
        f.write(name + "\\n")

def one(x):
    log("one")
    return x + 1

def two(a):
    log("two")
    marker = work / "crashed_once"
    if not marker.exists():
        marker.write_text("yes")
        os.kill(os.getpid(), signal.SIGKILL)
    return a * 10

def three(b):
    log("three")
    return b + 7

graph = Graph(
    [
        Stage("one", one, inputs=("x",), outputs=("a",)),
        Stage("two", two, inputs=("a",), outputs=("b",)),
        Stage("three", three, inputs=("b",), outputs=("c",)),
    ],
    external_inputs=["x"],
)
out = Runner(graph, Cache(work / "cache")).run({{"x": 1}})
print("RESULT", out["c"])
"""


def test_resume_after_kill_mid_stage(tmp_path):
    script = tmp_path / "pipeline.py"
    script.write_text(CRASH_SCRIPT.format(repo=str(REPO), work=str(tmp_path)))
    first = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert (tmp_path / "calls.txt").read_text().split() == ["one", "two"]
    cache = Cache(tmp_path / "cache")
    assert [stage for stage, _ in cache.entries()] == ["one"]

    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "RESULT 27" in second.stdout  # (1 + 1) * 10 + 7
    assert (tmp_path / "calls.txt").read_text().split() == ["one", "two", "two", "three"]
    assert [stage for stage, _ in cache.entries()] == ["one", "three", "two"]


def test_resources_injected_and_not_in_key(tmp_path):
    seen = {}

    def train(x, device, ledger=None, params=None):
        seen["device"], seen["ledger"] = device, ledger
        return x * 2

    def build_runner(resources):
        graph = Graph([Stage("train", train, inputs=("x",), outputs=("y",))], external_inputs=["x"])
        return Runner(graph, Cache(tmp_path), resources=resources)

    r1 = build_runner({"device": "cpu", "ledger": "L1", "unused": object()})
    assert r1.run({"x": 2})["y"] == 4
    assert seen == {"device": "cpu", "ledger": "L1"}
    r2 = build_runner({"device": "cuda:7", "ledger": "L2"})
    assert [s.key for s in r1.status({"x": 2})] == [s.key for s in r2.status({"x": 2})]
    seen.clear()
    assert r2.run({"x": 2})["y"] == 4
    assert seen == {}  # cached: not called again


def test_missing_resource_is_reported_at_construction():
    def train(x, device):
        return x

    graph = Graph([Stage("train", train, inputs=("x",), outputs=("y",))], external_inputs=["x"])
    with pytest.raises(GraphError, match="'device'.*resources"):
        Runner(graph, None)
    with pytest.raises(GraphError, match="resource 'x'"):
        Runner(graph, None, resources={"device": "cpu", "x": 1})


def test_a_stage_that_declares_stage_key_receives_its_own_cache_key(tmp_path):
    seen = []

    def train(x, stage_key):
        seen.append(stage_key)
        return x + 1

    graph = Graph([Stage("train", train, inputs=("x",), outputs=("y",))], external_inputs=["x"])
    runner = Runner(graph, Cache(tmp_path))
    assert runner.run({"x": 1})["y"] == 2
    assert seen == [runner.status({"x": 1})[0].key]
    with pytest.raises(GraphError, match="'stage_key' cannot be a resource"):
        Runner(graph, None, resources={"stage_key": "mine"})


class Recorder(Hook):
    def __init__(self):
        self.events = []

    def before_pipeline(self, graph, run_info):
        self.events.append(("before_pipeline", tuple(run_info["stages"]), run_info.get("name")))

    def before_stage(self, stage, key, cached):
        self.events.append(("before_stage", stage.name, cached))

    def on_progress(self, stage, done, total, info):
        self.events.append(("progress", stage.name, done, total, info))

    def after_stage(self, stage, key, outputs, seconds, cached):
        self.events.append(("after_stage", stage.name, cached, sorted(outputs)))

    def on_stage_error(self, stage, key, error):
        self.events.append(("on_stage_error", stage.name, type(error).__name__))

    def after_pipeline(self, outputs):
        self.events.append(("after_pipeline", sorted(outputs)))

    def on_pipeline_error(self, error):
        self.events.append(("on_pipeline_error", type(error).__name__))


def two_stage_graph(fail=False):
    def first(x, progress):
        for i in range(2):
            progress(i + 1, 2, loss=0.5)
        return x + 1

    def second(a):
        if fail:
            raise ValueError("boom")
        return a * 2

    return Graph(
        [Stage("first", first, inputs=("x",), outputs=("a",)), Stage("second", second, inputs=("a",), outputs=("b",))],
        external_inputs=["x"],
    )


def test_hook_call_order_with_cached_flag(tmp_path):
    rec = Recorder()
    Runner(two_stage_graph(), Cache(tmp_path), hooks=[rec]).run({"x": 1}, run_info={"name": "demo"})
    assert rec.events == [
        ("before_pipeline", ("first", "second"), "demo"),
        ("before_stage", "first", False),
        ("progress", "first", 1, 2, {"loss": 0.5}),
        ("progress", "first", 2, 2, {"loss": 0.5}),
        ("after_stage", "first", False, ["a"]),
        ("before_stage", "second", False),
        ("after_stage", "second", False, ["b"]),
        ("after_pipeline", ["a", "b"]),
    ]
    rec = Recorder()
    Runner(two_stage_graph(), Cache(tmp_path), hooks=[rec]).run({"x": 1})
    assert rec.events == [
        ("before_pipeline", ("first", "second"), None),
        ("before_stage", "first", True),
        ("after_stage", "first", True, ["a"]),
        ("before_stage", "second", True),
        ("after_stage", "second", True, ["b"]),
        ("after_pipeline", ["a", "b"]),
    ]


def test_stage_error_calls_hooks_keeps_earlier_outputs_and_propagates(tmp_path):
    rec = Recorder()
    cache = Cache(tmp_path)
    runner = Runner(two_stage_graph(fail=True), cache, hooks=[rec])
    with pytest.raises(ValueError, match="^boom$"):
        runner.run({"x": 1})
    assert rec.events[-3:] == [
        ("before_stage", "second", False),
        ("on_stage_error", "second", "ValueError"),
        ("on_pipeline_error", "ValueError"),
    ]
    assert [s.cached for s in runner.status({"x": 1})] == [True, False]


def test_progress_resource_is_forwarded(tmp_path):
    got = []
    runner = Runner(two_stage_graph(), None, resources={"progress": lambda d, t, **i: got.append((d, t, i))})
    assert runner.run({"x": 1})["b"] == 4
    assert got == [(1, 2, {"loss": 0.5}), (2, 2, {"loss": 0.5})]


def test_wrong_output_names_error():
    def bad(x):
        return {"a": 1, "c": 2}

    graph = Graph([Stage("bad", bad, inputs=("x",), outputs=("a", "b"))], external_inputs=["x"])
    with pytest.raises(StageOutputError) as e:
        Runner(graph, None).run({"x": 1})
    msg = str(e.value)
    assert isinstance(e.value, ProxynasError) and "\n" not in msg
    assert "'bad'" in msg and "['a', 'c']" in msg and "['a', 'b']" in msg

    def not_a_dict(x):
        return 3

    graph = Graph([Stage("nd", not_a_dict, inputs=("x",), outputs=("a", "b"))], external_inputs=["x"])
    with pytest.raises(StageOutputError, match="'nd' returned a int"):
        Runner(graph, None).run({"x": 1})


def test_single_output_may_be_returned_as_dict_or_value():
    def as_dict(x):
        return {"y": x}

    graph = Graph([Stage("s", as_dict, inputs=("x",), outputs=("y",))], external_inputs=["x"])
    assert Runner(graph, None).run({"x": 3})["y"] == 3


def test_status_and_format_status(tmp_path):
    calls = Counter()
    runner = Runner(build(calls), Cache(tmp_path))
    runner.run({"n": 4}, targets=["left"])
    rows = {s.name: s for s in runner.status({"n": 4})}
    assert {n: s.cached for n, s in rows.items()} == {
        "root": True, "left": True, "right": False, "join": False, "sibling": False
    }
    assert rows["join"].inputs == ("l", "r", "r_sum") and rows["right"].outputs == ("r", "r_sum")
    table = runner.format_status({"n": 4})
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["#", "stage", "inputs"]
    assert len(lines) == 6
    assert "root" in lines[1] and "n -> base" in lines[1] and "cached" in lines[1]
    assert "join" in lines[4] and "l, r, r_sum -> total, check" in lines[4] and "pending" in lines[4]
    # without the external input the keys are unknown, not an error
    assert all(s.key is None and not s.cached for s in runner.status())


def test_console_hook_lines(tmp_path):
    def run():
        stream = io.StringIO()
        Runner(two_stage_graph(), Cache(tmp_path), hooks=[ConsoleHook(stream, log_interval=0.0)]).run({"x": 1})
        return stream.getvalue().splitlines()

    lines = run()
    assert "[1/2] first ... 1/2 loss=0.5" in lines  # progress, not on a tty: one line per 10%
    first = [line for line in lines if " done in " in line]
    assert first[0].startswith("[1/2] first ... done in ") and first[0].endswith("s")
    assert first[1].startswith("[2/2] second ... done in ")
    assert run() == ["[1/2] first ... cached", "[2/2] second ... cached"]


def test_input_errors():
    graph = Graph([Stage("s", lambda x: x, inputs=("x",), outputs=("y",))], external_inputs=["x"])
    with pytest.raises(ProxynasError, match="missing input 'x'"):
        Runner(graph, Cache(Path("/nonexistent"))).run()
    with pytest.raises(ProxynasError, match="unknown input 'z'"):
        Runner(graph, None).run({"x": 1, "z": 2})
    with pytest.raises(ProxynasError, match="input_keys"):
        Runner(graph, Cache(Path("/nonexistent"))).run({"x": torch.zeros(2)})


def test_unhashable_input_with_key_and_key_only_resume(tmp_path):
    calls = Counter()

    def f(x):
        calls["f"] += 1
        return x.sum().item()

    graph = Graph([Stage("s", f, inputs=("x",), outputs=("y",))], external_inputs=["x"])
    runner = Runner(graph, Cache(tmp_path))
    assert runner.run({"x": torch.ones(3)}, input_keys={"x": "ones3"})["y"] == 3.0
    # the key alone suffices when the reader is cached
    assert runner.run(input_keys={"x": "ones3"})["y"] == 3.0
    assert calls["f"] == 1


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    calls = Counter()
    Runner(build(calls), Cache(tmp_path)).run({"n": 4})
    (key,) = [k for s, k in Cache(tmp_path).entries() if s == "right"]
    (tmp_path / "right" / key / "outputs.pt").write_bytes(b"junk")
    calls.clear()
    runner = Runner(build(calls, {"left": Scale(5.0)}), Cache(tmp_path))
    assert not {s.name: s.cached for s in runner.status({"n": 4})}["right"]  # `proxynas stages` says so too
    out = runner.run({"n": 4})
    assert calls == Counter(left=1, right=1, join=1)
    assert out["total"] == 5 * 6.0 + 3 * 6.0


def test_failing_error_hook_does_not_mask_the_stage_error(tmp_path):
    class Broken(Hook):
        def on_stage_error(self, stage, key, error):
            raise RuntimeError("hook bug")

    rec = Recorder()
    with pytest.warns(Warning, match="hook bug"), pytest.raises(ValueError, match="boom"):
        Runner(two_stage_graph(fail=True), None, hooks=[Broken(), rec]).run({"x": 1})
    assert rec.events[-2:] == [("on_stage_error", "second", "ValueError"), ("on_pipeline_error", "ValueError")]


def test_console_progress_in_logs_is_throttled():
    def chatty(progress):
        for i in range(100):
            progress(i + 1, 100, loss=0.1)
        return 1

    graph = Graph([Stage("chatty", chatty, outputs=("y",))])
    quiet, loud = io.StringIO(), io.StringIO()
    Runner(graph, None, hooks=[ConsoleHook(quiet, log_interval=3600.0)]).run()
    Runner(graph, None, hooks=[ConsoleHook(loud, log_interval=0.0)]).run()
    assert sum(" 0.1" in l or "loss=" in l for l in quiet.getvalue().splitlines()) == 1
    assert sum("loss=" in l for l in loud.getvalue().splitlines()) == 10  # one per 10%


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_console_progress_on_a_terminal_is_one_redrawn_bar():
    def training(progress):
        for arch in range(3):
            for epoch in range(50):
                progress(arch, 3, arch=arch + 1, epoch=f"{epoch + 1}/50")
            progress(arch + 1, 3)
        return 1

    stream = _Tty()
    Runner(Graph([Stage("train", training, outputs=("y",))]), None, hooks=[ConsoleHook(stream)]).run()
    text = stream.getvalue()
    assert "\n" not in text.split("done in")[0]  # redrawn in place until the stage ends
    assert text.count("\r") < 20  # at most 10 redraws a second, not one per call (150 calls)
    assert "[1/1] train ... [####################] 3/3" in text


def test_console_progress_in_logs_has_a_heartbeat_while_the_count_stands_still(monkeypatch):
    clock = iter(range(0, 10_000, 7))  # every call advances 7 s
    monkeypatch.setattr("proxynas.engine.hooks.time.monotonic", lambda: next(clock))

    def training(progress):
        for epoch in range(40):  # one long arch: the count stays at 0 of 2
            progress(0, 2, arch=1, epoch=f"{epoch + 1}/40")
        progress(1, 2)
        progress(2, 2)
        return 1

    stream = io.StringIO()
    Runner(Graph([Stage("train", training, outputs=("y",))]), None,
           hooks=[ConsoleHook(stream, log_interval=0.0, heartbeat=60.0)]).run()
    lines = [line for line in stream.getvalue().splitlines() if "epoch=" in line]
    assert 3 <= len(lines) <= 6  # 40 calls 7 s apart, one line a minute
    assert lines[0].startswith("[1/1] train ... 0/2 arch=1 epoch=")
