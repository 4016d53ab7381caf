"""Kill a pipeline run at random moments, resume it each time, and check nothing is lost or changed.

    python benchmarks/crash_test.py pipelines/quickstart.yaml --kills 20 --seed 0

First one uninterrupted ``proxynas run`` times the pipeline and records its
results (the report's results table, string for string). Then, in a fresh
cache, ``proxynas run`` is started and its whole process group SIGKILLed
after a uniformly drawn moment within that time, ``--kills`` times (a run
that finishes before its kill moment counts as completed, not killed), and
finally run to completion. It prints, per kill, the cached stages and the
per-architecture records (stage journals, :mod:`proxynas.engine.journal`)
the kill left behind, and in total: kills, the compute time of all attempts
over that of as many uninterrupted runs as were completed (the work redone,
plus start-ups), and whether
the final results equal the uninterrupted run's (every value of every
architecture, timings aside).

Runs on the CPU by default (``--set run.device=...`` to change), without
MLflow (``--no-mlflow``) and with the ledger in the work folder.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CrashReport:
    clean_seconds: float
    kills: int = 0
    completed_early: int = 0
    attempt_seconds: list[float] = field(default_factory=list)
    left_behind: list[tuple[int, int]] = field(default_factory=list)  # (cached stages, journal records) per kill
    equal: bool = False

    @property
    def completions(self) -> int:
        """Pipelines completed: each attempt that finished before its kill, and the final run."""
        return self.completed_early + 1

    @property
    def overhead(self) -> float:
        """Compute time of all attempts over that of as many uninterrupted runs as completed (1.0 = nothing redone)."""
        return sum(self.attempt_seconds) / (self.completions * self.clean_seconds)


def _command(pipeline: str, overrides: list[str], cache: Path, work: Path) -> list[str]:
    sets = [*overrides, f"run.cache_dir={cache}", f"run.ledger=sqlite:///{work / 'ledger.db'}"]
    return [sys.executable, "-m", "proxynas", "run", pipeline, "--no-mlflow",
            *[arg for s in sets for arg in ("--set", s)]]


def _results(pipeline: str, overrides: list[str], cache: Path) -> str:
    """The report's results table of a fully cached run as text, without its timings (which vary)."""
    sys.path.insert(0, str(ROOT))
    from proxynas.app import build_runner, load_pipeline

    config = load_pipeline(pipeline, overrides, cache_dir=str(cache))
    table = build_runner(config).run(targets=["report"])["results"]
    rows = [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in table.rows]
    return repr(rows)


def _left_behind(cache: Path) -> tuple[int, int]:
    stages = sum(1 for p in cache.glob("*/*/outputs.pt") if not p.parent.name.startswith("."))
    records = sum(1 for _ in (cache / ".journal").glob("*/*/*.json")) if (cache / ".journal").is_dir() else 0
    return stages, records


def crash_test(pipeline: str, overrides: list[str], kills: int, seed: int, work: Path, log=print) -> CrashReport:
    """Run the crash test in ``work`` (emptied first); see the module doc."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    clean = work / "clean"
    start = time.perf_counter()
    subprocess.run(_command(pipeline, overrides, clean, work), check=True, capture_output=True, env=env)
    report = CrashReport(clean_seconds=time.perf_counter() - start)
    log(f"uninterrupted run: {report.clean_seconds:.1f} s")
    expected = _results(pipeline, overrides, clean)
    rng = random.Random(seed)
    crash = work / "crash"
    while report.kills < kills:
        moment = rng.uniform(0, report.clean_seconds)
        start = time.perf_counter()
        proc = subprocess.Popen(_command(pipeline, overrides, crash, work), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            proc.wait(timeout=moment)
            report.attempt_seconds.append(time.perf_counter() - start)
            report.completed_early += 1
            log(f"attempt finished before its kill at {moment:.1f} s; starting over from an empty cache")
            shutil.rmtree(crash, ignore_errors=True)  # nothing left to resume: draw the next kill afresh
            continue
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        report.attempt_seconds.append(time.perf_counter() - start)
        report.kills += 1
        report.left_behind.append(_left_behind(crash))
        stages, records = report.left_behind[-1]
        log(f"kill {report.kills:>3} at {moment:6.1f} s: {stages} stages cached, {records} archs in journals")
    start = time.perf_counter()
    subprocess.run(_command(pipeline, overrides, crash, work), check=True, capture_output=True, env=env)
    report.attempt_seconds.append(time.perf_counter() - start)
    report.equal = _results(pipeline, overrides, crash) == expected
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", nargs="?", default=str(ROOT / "pipelines" / "quickstart.yaml"))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", default="/tmp/proxynas_crash_test", help="scratch folder (emptied)")
    args = parser.parse_args(argv)
    overrides = ["run.device=cpu", *args.overrides]
    report = crash_test(args.pipeline, overrides, args.kills, args.seed, Path(args.work))
    stages = [s for s, _ in report.left_behind]
    records = [r for _, r in report.left_behind]
    print("\n| kills | finished before the kill | uninterrupted s | all attempts s | overhead |"
          " stages cached at a kill (mean) | archs journaled at a kill (mean) | results equal |")
    print("|---|---|---|---|---|---|---|---|")
    mean = (lambda xs: sum(xs) / len(xs)) if report.left_behind else (lambda xs: float("nan"))
    print(f"| {report.kills} | {report.completed_early} | {report.clean_seconds:.1f} |"
          f" {sum(report.attempt_seconds):.1f} | {report.overhead:.2f}x | {mean(stages):.1f} | {mean(records):.1f} |"
          f" {'yes' if report.equal else 'NO'} |")
    return 0 if report.equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
