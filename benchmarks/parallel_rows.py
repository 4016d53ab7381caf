"""Wall time of a pipeline's rows run one after another vs side by side (``proxynas run --jobs N``).

    python benchmarks/parallel_rows.py pipelines/nb201_cifar10.yaml --jobs 1,3 \\
        --set sample.num_archs=20 --set proxy.epochs=50 --set 'distill.methods={random: {}, herding: {}, kcenter: {}}'

For each ``--jobs`` value the pipeline runs from an empty cache of its own
(under ``--work``), after its ``load_data`` and ``sample_archs`` stages were
computed untimed, so the timed part is the rows (distill + proxy training,
baselines, reference) and the report. It prints wall seconds per setting and
the speed-up over the first; the rows' results must be the same, so it also
prints each row's Spearman to show that.

Meant for a GPU, where one process training small networks is bound by
kernel launches; on a CPU the cores are already shared out between
architectures (``run.workers``), so expect little there.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from workplace import data_root_overrides  # benchmarks/workplace.py


def _run(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return seconds, proc.stdout


def _spearman(report: str) -> dict[str, str]:
    rows = {}
    for line in report.splitlines():
        m = re.match(r"^(\S+)\s+([+-]\d\.\d{3}) \[", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--jobs", default="1,3", help="comma list of --jobs values (default 1,3)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", default="/tmp/proxynas_parallel_rows", help="scratch folder (emptied)")
    parser.add_argument("--data-root", help="the pipeline's data.root, e.g. a CIFAR-10 ImageFolder .tar.gz"
                        " (default: the workplace's ../shared copy when there is one)")
    args = parser.parse_args(argv)
    overrides = data_root_overrides(args.pipeline, args.data_root, args.overrides)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    table = []
    for jobs in (int(j) for j in args.jobs.split(",")):
        sets = [*overrides, f"run.cache_dir={work / f'jobs{jobs}' / 'cache'}"]
        base = [sys.executable, "-m", "proxynas", "run", args.pipeline, "--no-mlflow"]
        for s in sets:
            base += ["--set", s]
        _run([*base, "--only", "load_data", "--only", "sample_archs"])
        seconds, report = _run([*base, "--jobs", str(jobs)])
        table.append((jobs, seconds, _spearman(report)))
        print(f"jobs {jobs}: {seconds:.1f} s", file=sys.stderr, flush=True)
    first = table[0][1]
    rows = list(table[0][2])
    print(f"\n{args.pipeline} {' '.join(args.overrides)}")
    print("jobs  wall s  speed-up  " + "  ".join(rows))
    for jobs, seconds, rho in table:
        print(f"{jobs:<4}  {seconds:6.1f}  {first / seconds:7.2f}x  " + "  ".join(rho.get(r, "-").rjust(len(r)) for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
