"""Fan a graph's independent branches out to processes that share the stage cache.

The :class:`~proxynas.engine.Runner` executes stages one after another in one
process. The branches of a proxy pipeline (one per proxy row: distill, then
train every architecture on the summary) are independent, and on a GPU each is
bound by one Python thread launching the kernels of tiny networks, so running
them side by side can raise throughput. Measured on one H100 (NB201 C=16 N=5,
CIFAR-10): 3 rows x 40 archs x 100 epochs ran side by side in 232 s of wall
time while the rows' own stage timers summed to 533 s. Each process pays its
own start (imports, CUDA, loading the cached dataset), so short rows gain
less: 3 rows x 20 archs x 50 epochs took 144 s one after another, and the
side-by-side run did not finish in the ~110 s of GPU time that was left, so
that comparison is still open (``benchmarks/parallel_rows.py`` measures it).

The engine cannot rebuild a runner in another process (it does not know where
the graph came from), so the caller supplies the command that runs one stage;
the processes share nothing but the cache, whose entries are written atomically
(:mod:`proxynas.engine.cache`). A branch that fails loses nothing the others
computed: they are cached, and running again resumes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TextIO

from proxynas.engine.graph import Graph

__all__ = ["BranchResult", "FanOutPlan", "plan_fan_out", "run_branches"]


@dataclass(frozen=True)
class FanOutPlan:
    """What to run before, and beside each other.

    ``shared``: pending stages that two or more branches need, in topological
    order -- run them once, first, so the branch processes find them cached.
    ``branches``: pending stages to run each in its own process (with whatever
    pending upstream is theirs alone).
    """

    shared: tuple[str, ...]
    branches: tuple[str, ...]


def plan_fan_out(graph: Graph, pending: Iterable[str], sink: str | None = None) -> FanOutPlan:
    """Split the pending work feeding ``sink`` (default: the last stage) into branches.

    The branches are the pending stages that feed ``sink`` directly, except
    those another branch depends on, which become shared.
    """
    pending = set(pending)
    order = [s.name for s in graph.order()]
    sink = sink if sink is not None else order[-1]
    candidates = [name for name in graph.dependencies(sink) if name in pending]
    upstream = {name: set(graph.upstream(name)) & pending for name in candidates}
    needed_by: dict[str, int] = {}
    for ups in upstream.values():
        for name in ups:
            needed_by[name] = needed_by.get(name, 0) + 1
    shared = {name for name, n in needed_by.items() if n >= 2}
    shared |= {c for c in candidates if any(c in upstream[other] for other in candidates if other != c)}
    # a shared stage's own pending upstream has to run first too
    for name in list(shared):
        shared |= set(graph.upstream(name)) & pending
    branches = [c for c in candidates if c not in shared]
    return FanOutPlan(
        shared=tuple(n for n in order if n in shared),
        branches=tuple(n for n in order if n in branches),
    )


@dataclass(frozen=True)
class BranchResult:
    """How one branch process ended."""

    name: str
    returncode: int
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self) -> str:
        """The last non-empty line the process printed (progress lines split on ``\\r`` too)."""
        return _last_line(self.log)


def _last_line(path: Path, max_bytes: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-1] if lines else ""


def run_branches(
    branches: Sequence[str],
    command: Callable[[str], Sequence[str]],
    *,
    jobs: int,
    log_dir: str | Path,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    status_every: float = 30.0,
    poll: float = 0.2,
) -> list[BranchResult]:
    """Run ``command(branch)`` for every branch, at most ``jobs`` at a time.

    Each process writes its output to ``<log_dir>/<branch>.log``. One line per
    finished branch goes to ``stream`` (default stderr), and every
    ``status_every`` seconds a line with the last progress line of each running
    one, so long work shows progress. Failures do not stop the others. On
    KeyboardInterrupt the running processes are terminated and it re-raises.
    """
    if jobs < 1:
        raise ValueError("jobs must be >= 1")
    out = stream if stream is not None else sys.stderr
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    todo = list(branches)
    running: dict[str, tuple[subprocess.Popen, float, Path, TextIO]] = {}
    results: dict[str, BranchResult] = {}
    last_status = time.monotonic()

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        while todo or running:
            while todo and len(running) < jobs:
                name = todo.pop(0)
                log = log_dir / f"{name}.log"
                handle = open(log, "w")
                proc = subprocess.Popen(
                    list(command(name)), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=dict(env) if env is not None else None,
                )
                running[name] = (proc, time.monotonic(), log, handle)
                say(f"[jobs] started {name} (log: {log})")
            for name, (proc, started, log, handle) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                handle.close()
                del running[name]
                result = BranchResult(name, rc, time.monotonic() - started, log)
                results[name] = result
                state = "done" if result.ok else f"FAILED (exit {rc}): {result.last_line()}"
                say(f"[jobs {len(results)}/{len(branches)}] {name} {state} in {result.seconds:.0f}s")
            now = time.monotonic()
            if running and now - last_status >= status_every:
                last_status = now
                for name, (_, started, log, _) in running.items():
                    say(f"[jobs] {name} running {now - started:.0f}s: {_last_line(log)}")
            if running:
                time.sleep(poll)
    except BaseException:
        for proc, _, _, handle in running.values():
            proc.terminate()
        for proc, _, _, handle in running.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            handle.close()
        raise
    return [results[name] for name in branches]
