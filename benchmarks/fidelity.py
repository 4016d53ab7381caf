"""One table: how well each proxy ranks NAS-Bench-201 cells, and what it costs.

    python benchmarks/fidelity.py --size cpu [--seed 0] [--data-root PATH] [--set key=value ...]
    python benchmarks/fidelity.py --size gpu                     # NB201's C=16 N=5 network, on a GPU

Runs ``pipelines/fidelity_<size>.yaml`` twice through the stage cache: on
architectures drawn uniformly from the space with ``--seed`` (stratified
samples inflate Spearman), and on a second sample drawn uniformly from the
space's top 10% by the reference (NB201's 200-epoch CIFAR-10 test accuracy),
where a proxy must still order the good architectures. Every row of the
pipeline is a row of the table: summary-trained proxies (each summary scored
by its final validation accuracy and by the learning-curve scores the
pipeline's ``proxy.scores`` names), the zero-cost proxies, params, FLOPs,
AZ-NAS and NB201's own 12-epoch training.

Columns: Spearman, Kendall and nDCG of the proxy's top 10% on the uniform
sample and Spearman on the top-10% sample, each with a 95% bootstrap CI over
architectures; the row's wall seconds per architecture (distillation
amortised over the uniform sample); and its cost in *sample-passes per architecture* (training images x
passes, plus the distillation's passes over real images amortised) as a
percentage of NB201's full training, 200 epochs x 50,000 images. Rows computed
once are cached, so a rerun with one new row costs only that row.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from proxynas.app import build_runner, load_pipeline
from proxynas.engine import ConsoleHook
from proxynas.metrics import bootstrap_ci, kendall, ndcg, spearman
from proxynas.pipeline import build_graph

from workplace import data_root_overrides  # benchmarks/workplace.py

#: NB201's full training of one architecture: 200 epochs over CIFAR-10's 50,000 training images
FULL_PASSES = 200 * 50_000
BAR = (0.92, 0.60)  # Spearman over uniform archs, Spearman inside the top 10%


@dataclass(frozen=True)
class Sample:
    """One run of the pipeline: per-arch values of every row, and what the rows cost."""

    archs: list[str]
    reference: np.ndarray
    values: dict[str, np.ndarray]
    seconds: dict[str, float]  # per arch, distillation amortised
    passes: dict[str, float]  # sample-passes per arch, distillation amortised
    wall: float
    #: the archs each row scores (all but a few-shot row's fit archs)
    scored: dict[str, np.ndarray]


def _proxy_passes(proxy: Any, train_size: int) -> float:
    """Training images x passes of one arch's training (0 for proxies that do not train)."""
    epochs = getattr(proxy, "epochs", None)
    if epochs is None:
        batch = getattr(proxy, "batch_size", None)  # zero-cost proxies score one batch
        return float(batch or 0)
    steps = getattr(proxy, "steps", None)
    if steps:
        return float(steps * min(proxy.batch_size, train_size))
    return float(epochs * train_size)


def _distill_passes(method: Any, train_size: int, num_classes: int, ipc: int) -> float:
    """Real images a distillation processes (an estimate from its settings; 0 for a random subset)."""
    name = type(method).name
    iterations = getattr(method, "iterations", 0) or 0
    batch_real = getattr(method, "batch_real", 0) or 0
    if name == "random":
        return 0.0
    if name in ("herding", "kcenter"):
        return float(train_size)  # one embedding pass over the training split
    return float(iterations * batch_real * num_classes) if batch_real else float("nan")


def run_sample(pipeline: str, overrides: Sequence[str]) -> Sample:
    config = load_pipeline(pipeline, overrides)
    graph = build_graph(config)
    start = time.perf_counter()
    outputs = build_runner(config, [ConsoleHook()], pipeline=graph).run()
    wall = time.perf_counter() - start
    rows = outputs["results"].rows
    archs = [r["arch"] for r in rows]
    dataset = outputs["dataset"]
    train_size, num_classes = len(dataset.train), dataset.num_classes
    values, seconds, passes = {}, {}, {}
    for row in graph.rows:
        if row.kind == "combined":
            continue
        base = row.name.split(":")[0]  # a learning-curve row shares its training (and cost) with its base row
        values[row.name] = np.array([float(r[row.name]) for r in rows])
        per_arch = float(np.mean([float(r[f"{base}_seconds"]) for r in rows]))
        if row.distilled:
            method = config.distill.methods[row.method]
            summary_size = config.distill.ipc * num_classes
            distill_s = float(outputs[row.distill_seconds]) / len(archs)
            seconds[row.name] = per_arch + distill_s
            training = _proxy_passes(config.proxy, summary_size)
            passes[row.name] = training + _distill_passes(
                method, train_size, num_classes, config.distill.ipc) / len(archs)
            if row.teacher_seconds:
                # the teacher's training amortised, and its forward pass over every student batch
                seconds[row.name] += float(outputs[row.teacher_seconds]) / len(archs)
                passes[row.name] += training + _proxy_passes(config.teacher, train_size) / len(archs)
        else:
            seconds[row.name] = per_arch
            proxy = config.baselines[base]
            if type(proxy).name == "nb201_table":  # the benchmark's own training, read from its table
                epochs = 12 if "12ep" in proxy.column else 200
                passes[row.name] = float(epochs * 50_000)
            else:
                passes[row.name] = _proxy_passes(proxy, train_size)
    for row in graph.rows:
        if row.kind == "combined":  # costs what its distinct trainings cost
            values[row.name] = np.array([np.nan if r[row.name] is None else float(r[row.name]) for r in rows])
            bases = {name.split(":")[0]: name for name in row.sources}
            seconds[row.name] = sum(seconds[name] for name in bases.values())
            passes[row.name] = sum(passes[name] for name in bases.values())
    reference = np.array([float(r["reference"]) for r in rows])
    scored = {}
    for row in graph.rows:
        fit = row.combination is not None and row.combination.method == "few_shot"
        scored[row.name] = ~np.isnan(values[row.name]) if fit else np.ones(len(archs), dtype=bool)
    return Sample(archs, reference, values, seconds, passes, wall, scored)


def _ci(metric, proxy: np.ndarray, ref: np.ndarray, seed: int) -> tuple[float, float, float]:
    point = metric(proxy, ref)
    lo, hi = bootstrap_ci(metric, proxy, ref, n_boot=1000, ci=0.95, seed=seed)
    return point, lo, hi


def _scored(sample: Sample, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Row ``name``'s values and the reference on the archs it scores; a non-finite value ranks lowest."""
    mask = sample.scored[name]
    values, ref = sample.values[name][mask], sample.reference[mask]
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, np.nanmin(np.where(finite, values, np.nan)) - 1.0)
    return values, ref


def table(uniform: Sample, top: Sample, seed: int) -> list[dict[str, Any]]:
    out = []
    for name in uniform.values:
        row: dict[str, Any] = {"row": name}
        v, ref = _scored(uniform, name)
        row["spearman"] = _ci(spearman, v, ref, seed)
        row["kendall"] = _ci(kendall, v, ref, seed)
        k = max(3, len(v) // 10)  # nDCG of the proxy's top 10%: what a search keeps
        row["ndcg"] = _ci(lambda p, r: ndcg(p, r, k=min(k, len(p))), v, ref, seed)
        tv, tref = _scored(top, name)
        row["top10_spearman"] = _ci(spearman, tv, tref, seed)
        row["seconds"] = uniform.seconds[name]
        row["cost_pct"] = 100.0 * uniform.passes[name] / FULL_PASSES
        out.append(row)
    return out


def _fmt(triple: tuple[float, float, float]) -> str:
    p, lo, hi = triple
    return "n/a" if math.isnan(p) else f"{p:+.3f} [{lo:+.2f}, {hi:+.2f}]"


def format_table(rows: Sequence[Mapping[str, Any]], uniform: Sample, top: Sample | None, device: str) -> str:
    """The table; with ``top`` None the uniform sample alone (its last column repeats the uniform Spearman)."""
    drawn = f"{len(top.archs)} from the top 10% (by the reference)" if top is not None else "no top-10% sample yet"
    lines = [
        f"{len(uniform.archs)} uniform archs, {drawn}; {device};"
        f" 95% bootstrap CIs; cost = sample-passes per arch as % of NB201's 200 x 50,000",
        f"{'row':<22} {'Spearman':<24} {'Kendall':<24} {'nDCG@10%':<24} {'top-10% Spearman':<24} {'s/arch':>8} {'cost %':>9}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in sorted(rows, key=lambda r: -r["spearman"][0] if not math.isnan(r["spearman"][0]) else 9):
        lines.append(
            f"{r['row']:<22} {_fmt(r['spearman']):<24} {_fmt(r['kendall']):<24} {_fmt(r['ndcg']):<24}"
            f" {_fmt(r['top10_spearman']):<24} {r['seconds']:>8.2f} {r['cost_pct']:>9.4f}"
        )
    cheap = [r for r in rows if r["cost_pct"] <= 1.0 and not math.isnan(r["spearman"][0])]
    if cheap and top is not None:  # the bar needs the top-10% sample
        best = max(cheap, key=lambda r: r["spearman"][0])
        meets = best["spearman"][0] >= BAR[0] and best["top10_spearman"][0] >= BAR[1]
        lines.append(
            f"best row at <= 1% cost: {best['row']} (Spearman {best['spearman'][0]:+.3f}, top-10%"
            f" {best['top10_spearman'][0]:+.3f}): {'meets' if meets else 'does not meet'} the bar"
            f" (>= {BAR[0]} and >= {BAR[1]})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="the architecture sample's seed (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-root", help="CIFAR-10 ImageFolder folder or .tar.gz (default: the workplace copy)")
    parser.add_argument("--top-archs", type=int, help="archs of the top-10%% sample (default: sample.num_archs)")
    args = parser.parse_args(argv)
    pipeline = f"pipelines/fidelity_{args.size}.yaml"
    overrides = data_root_overrides(pipeline, args.data_root, [f"sample.seed={args.seed}", *args.overrides])
    config = load_pipeline(pipeline, overrides)
    device = str(build_runner(config).resources["device"])
    uniform = run_sample(pipeline, overrides)
    # the uniform half on its own first, so a run cut short still leaves numbers
    print(format_table(table(uniform, uniform, args.seed), uniform, None, device)
          .replace("top-10% Spearman", "(uniform again)  "), flush=True)
    top_overrides = [*overrides, "sample.strategy=top", "sample.fraction=0.1", f"run.name=fidelity_{args.size}_top10"]
    if args.top_archs:
        top_overrides.append(f"sample.num_archs={args.top_archs}")
    top = run_sample(pipeline, top_overrides)
    print(format_table(table(uniform, top, args.seed), uniform, top, device))
    print(f"wall time {uniform.wall + top.wall:.0f} s (uniform {uniform.wall:.0f} s, top-10% {top.wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
