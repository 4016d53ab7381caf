"""Print the rank table of every proxy in a pipeline (running or reusing its cached stages).

    python benchmarks/rank_table.py pipelines/nb201_cifar10_cpu.yaml [--data-root CIFAR10] [--set key=value ...]

Columns: Spearman and Kendall tau with bootstrap CIs, top-k precision, Spearman
inside the reference top-k, proxy cost (distillation + evaluation seconds) and
reference cost, followed by the published anchors for NB201/CIFAR-10.
"""

from __future__ import annotations

import argparse
import sys
import time

from proxynas.app import build_runner
from proxynas.config import load_config
from proxynas.engine import ConsoleHook
from proxynas.report import format_report

from workplace import data_root_overrides  # benchmarks/workplace.py

# Spearman vs NB201 CIFAR-10 200-epoch accuracy reported in the literature.
ANCHORS = [
    ("DC-Bench distilled data (Cui et al. 2022, NB201 N=1)", "-0.37 .. +0.11"),
    ("params, all 15,625 archs (measured on the shared table)", "0.75"),
    ("synflow (Abdelfattah et al. ICLR 2021)", "0.74"),
    ("NB201 12-epoch training (measured on the shared table)", "0.87"),
    ("AZ-NAS (Lee & Ham, CVPR 2024)", "0.91"),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-root", help="the pipeline's data.root, e.g. a CIFAR-10 ImageFolder .tar.gz"
                        " (default: the workplace's ../shared copy when there is one)")
    args = parser.parse_args(argv)
    config = load_config(args.pipeline, data_root_overrides(args.pipeline, args.data_root, args.overrides))
    start = time.perf_counter()
    outputs = build_runner(config, hooks=[ConsoleHook()]).run()
    print(format_report(outputs["report"]))
    print(f"\nwall time {time.perf_counter() - start:.1f} s\n\nPublished anchors (Spearman):")
    for name, value in ANCHORS:
        print(f"  {name:<60} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
