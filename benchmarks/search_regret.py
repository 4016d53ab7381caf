"""Regret of NAS search on NAS-Bench-201 by proxy: distilled data vs parameter count vs the oracle.

    python benchmarks/search_regret.py                                   # rows params,oracle: table lookups, seconds
    python benchmarks/search_regret.py --rows dm --seeds 2 --trials 20,50 # the distilled proxy: trains every arch

Each search runs ``max(--trials)`` trials of a sampler on the pipeline's space
(``pipelines/nb201_cifar10_cpu.yaml``: NB201 cells, disconnected ones
skipped) and reports, after each checkpoint, the regret of the arch it would
return -- the best arch *by its objective* -- against NB201's 200-epoch
CIFAR-10 test accuracy: ``max over all 15,625 archs - accuracy of that arch``
(Ying et al., NAS-Bench-101, ICML 2019; Dong & Yang, NAS-Bench-201, ICLR 2020).
Rows:

* a distill method of the pipeline (``dm``, ``random``...): each arch is
  trained on the distilled summary exactly as ``proxynas run`` does
  (:class:`proxynas.search.ProxyObjective`). Scores are kept in a JSON file
  per (summary, proxy settings) under ``--score-cache``, shared by every
  seed and sampler, so each arch is trained once; the reported cost counts
  every arch a search scored at its measured seconds, cached or not.
* ``params``: the table's parameter count (``params_MB``, C=16 N=5 network).
* ``oracle``: the reference column itself -- the lower bound on regret a
  perfect proxy would reach with the same sampler and budget.

Samplers: ``random``, ``tpe``, ``evolution`` (see :mod:`proxynas.search.samplers`).
The table is mean +- std over seeds (the sampler's seed; proxies are fixed).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import optuna

from proxynas.config import load_config
from proxynas.engine import ConsoleHook
from proxynas.reference import NB201TableProxy, load_table
from proxynas.search import (
    CachedObjective,
    ProxyObjective,
    Reference,
    TableObjective,
    create_study,
    make_sampler,
    regret_png,
    run_search,
)

from workplace import data_root_overrides  # benchmarks/workplace.py

DEFAULT_PIPELINE = "pipelines/nb201_cifar10_cpu.yaml"
DEFAULT_TABLE = ""  # empty: the NB201 table shipped with proxynas
TABLE_ROWS = ("params", "oracle")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def make_objective(row: str, config, table, column: str, score_cache: Path):
    if row == "params":
        return TableObjective(table, "params_MB", name="params")
    if row == "oracle":
        return TableObjective(table, column, name="oracle")
    return CachedObjective(ProxyObjective.from_pipeline(config, row, hooks=[ConsoleHook()]), score_cache)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=DEFAULT_PIPELINE)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="pipeline override, e.g. --set proxy.epochs=50 (repeatable)")
    parser.add_argument("--rows", default="params,oracle", help="comma list: distill methods, params, oracle")
    parser.add_argument("--samplers", default="random,tpe,evolution")
    parser.add_argument("--seeds", type=int, default=5, help="number of sampler seeds (default 5)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed.. (default 0)")
    parser.add_argument("--trials", default="50,100", help="checkpoints; the largest is the budget (default 50,100)")
    parser.add_argument("--table", help="NB201 results table (default: the pipeline's reference table, else the packaged one)")
    parser.add_argument("--column", default="cifar10_test_200ep", help="ground-truth column (default cifar10_test_200ep)")
    parser.add_argument("--score-cache", default=".proxynas/search_scores", help="per-arch score files of trained rows")
    parser.add_argument("--plot", help="write the mean regret curves to this PNG")
    parser.add_argument("--data-root", help="the pipeline's data.root, e.g. a CIFAR-10 ImageFolder .tar.gz"
                        " (default: the workplace's ../shared copy when there is one)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    config = load_config(args.pipeline, data_root_overrides(args.pipeline, args.data_root, args.overrides))
    checkpoints = sorted({int(t) for t in _csv(args.trials)})
    budget = checkpoints[-1]
    table_path = args.table or (config.reference.path if isinstance(config.reference, NB201TableProxy) else DEFAULT_TABLE)
    table = load_table(table_path)
    reference = Reference.from_table(table, args.column)
    rows, samplers = _csv(args.rows), _csv(args.samplers)
    print(f"space {config.space}; reference {args.column}: best {reference.best:.2f} over {len(reference)} archs",
          file=sys.stderr)

    results = []  # (row, sampler, seed, SearchResult)
    curves: dict[str, list[list[float]]] = {}
    start = time.perf_counter()
    for row in rows:
        objective = make_objective(row, config, table, args.column, Path(args.score_cache))
        for sampler in samplers:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                factory = make_sampler(sampler, seed)
                t0 = time.perf_counter()
                result = run_search(config.space, objective, factory.create(), budget,
                                    create_study(None, None, factory.directions), reference)
                results.append((row, sampler, seed, result))
                curves.setdefault(f"{row} / {sampler}", []).append(list(result.regret_so_far))
                print(f"  {row:<8} {sampler:<10} seed {seed}: regret@{budget} {result.regret:.2f}"
                      f" ({result.n_evaluated} archs scored, {result.search_seconds:.1f} s of scoring,"
                      f" {time.perf_counter() - t0:.1f} s wall)", file=sys.stderr, flush=True)

    head = ["row", "sampler", *(f"regret@{n}" for n in checkpoints), f"archs@{budget}", f"cost@{budget} s"]
    lines = [head]
    for row in rows:
        for sampler in samplers:
            runs = [r for (rw, s, _, r) in results if rw == row and s == sampler]
            cells = [row, sampler]
            for n in checkpoints:
                cells.append(_mean_std([r.at(n)["regret"] for r in runs if not math.isnan(r.at(n)["regret"])]))
            cells.append(f"{statistics.mean(r.n_evaluated for r in runs):.1f}")
            # scoring seconds plus the one-off distillation (0 for table rows)
            cells.append(f"{statistics.mean(r.search_seconds + r.setup_seconds for r in runs):.1f}")
            lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    print(f"\nNB201 search regret vs {args.column} (best {reference.best:.2f}); {args.seeds} seeds,"
          f" pipeline {args.pipeline}{' ' + ' '.join(args.overrides) if args.overrides else ''}")
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    print(f"\nwall time {time.perf_counter() - start:.1f} s")
    if args.plot:
        mean = {name: [statistics.mean(c[i] for c in runs) for i in range(budget)] for name, runs in curves.items()}
        Path(args.plot).write_bytes(regret_png(mean, title=f"NB201 regret, mean of {args.seeds} seeds"))
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
