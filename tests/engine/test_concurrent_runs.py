"""Two runs of one pipeline in one cache: each stage is computed once, a killed holder blocks nothing."""

import fcntl
import multiprocessing
import os
import signal
import time

import pytest

from proxynas.engine import Cache, CacheError, Graph, Runner, Stage

CTX = multiprocessing.get_context("fork")


def _slow_double(x, params=None):
    with open(params["log"], "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(0.5)  # long enough for the other run to arrive while this one computes
    return x * 2


def _run(cache_root, log, out):
    graph = Graph(
        [
            Stage("double", _slow_double, inputs=("x",), outputs=("y",), params={"log": str(log)}),
            Stage("inc", lambda y: y + 1, inputs=("y",), outputs=("z",)),
        ],
        external_inputs=["x"],
    )
    out.put(Runner(graph, Cache(cache_root)).run({"x": 20})["z"])


def test_two_runs_at_once_compute_each_stage_once_and_agree(tmp_path):
    log = tmp_path / "calls.log"
    out = CTX.Queue()
    runs = [CTX.Process(target=_run, args=(tmp_path / "cache", log, out)) for _ in range(2)]
    for p in runs:
        p.start()
    for p in runs:
        p.join(60)
        assert p.exitcode == 0
    assert [out.get(timeout=5), out.get(timeout=5)] == [41, 41]
    assert len(log.read_text().split()) == 1  # the second run waited and reused the entry


def _hold_lock(cache_root, ready):
    with Cache(cache_root).lock("double", "k" * 64):
        ready.set()
        time.sleep(600)


def test_the_lock_of_a_killed_holder_is_released(tmp_path):
    ready = CTX.Event()
    holder = CTX.Process(target=_hold_lock, args=(tmp_path, ready))
    holder.start()
    assert ready.wait(30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    lock_file = tmp_path / ".locks" / "double" / f"{'k' * 64}.lock"
    with open(lock_file, "a") as handle:  # free at once: a non-blocking request would fail if it were held
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)


def test_a_truncated_entry_is_not_reported_as_cached(tmp_path):
    cache = Cache(tmp_path)
    cache.save("s", "a" * 64, {"y": list(range(1000))})
    assert cache.has("s", "a" * 64)
    outputs = cache.path("s", "a" * 64) / Cache.OUTPUTS
    outputs.write_bytes(outputs.read_bytes()[:100])
    assert not cache.has("s", "a" * 64)


def test_an_unwritable_cache_folder_fails_before_any_stage_runs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    calls = []
    graph = Graph([Stage("s", lambda x: calls.append(x) or x, inputs=("x",), outputs=("y",))], external_inputs=["x"])
    with pytest.raises(CacheError, match=r"^cache folder .*a-file/cache is not writable \(.*\); choose another with"):
        Runner(graph, Cache(blocker / "cache")).run({"x": 1})
    assert calls == []
