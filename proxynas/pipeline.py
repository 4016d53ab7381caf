"""The proxy-evaluation pipeline as a stage graph built from a :class:`PipelineConfig`.

    load_data ─┬─ distill_<m> ── proxy_<m> ──┐
    sample_archs ┼───────────── baseline_<b> ─┼─ report
               └─────────────── reference ───┘

Stages are plain functions of named inputs; the runner caches each output by
content, so changing e.g. ``distill.methods.dm.iterations`` recomputes only
``distill_dm``, ``proxy_dm`` and ``report``.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import torch

from proxynas.artifacts import Figure, Metrics, Table, Tensors
from proxynas.config.pipeline import PipelineConfig, ReportConfig
from proxynas.data.types import DatasetSplits, ImageData
from proxynas.distill.base import DISTILLERS, Distiller, PreparedDistiller, Summary
from proxynas.engine import Graph, Stage
from proxynas.evaluation import score_all
from proxynas.metrics.rank import rank_metrics
from proxynas.plots import image_grid_png, scatter_png
from proxynas.progress import Progress, null_progress
from proxynas.proxies.base import Proxy, ProxyContext
from proxynas.sampling import stratified_sample
from proxynas.spaces.base import SearchSpace


# -- stage functions ----------------------------------------------------------
def load_data(params) -> DatasetSplits:
    return params.load()


def sample_archs(params: Mapping[str, Any]) -> list[str]:
    space: SearchSpace = params["space"]
    sample = params["sample"]
    if sample.strategy == "stratified":
        from proxynas.reference import load_table

        reference = load_table(sample.table).column(sample.column)
        return stratified_sample(space, reference, sample.num_archs, bins=sample.bins, seed=sample.seed)
    return space.sample(sample.num_archs, seed=sample.seed)


def prepare(
    dataset: DatasetSplits,
    params: Mapping[str, Any],
    device: torch.device,
    progress: Progress = null_progress,
) -> dict[str, Any]:
    """The reusable part of a :class:`PreparedDistiller` (e.g. MTT's expert trajectories).

    ``params`` holds only the preparation settings, so they alone key the
    cache; ``prepare`` ignores the others (see :meth:`PreparedDistiller.for_prepare`).
    """
    method: PreparedDistiller = DISTILLERS.get(params["distiller"]).for_prepare(params["settings"])
    start = time.perf_counter()
    prepared = method.prepare(dataset.train, seed=params["seed"], device=device, progress=progress)
    row = params["row"]
    return {f"prepared_{row}": prepared, f"prepare_seconds_{row}": time.perf_counter() - start}


def distill(
    dataset: DatasetSplits,
    params: Mapping[str, Any],
    device: torch.device,
    progress: Progress = null_progress,
    prepared: Any = None,
    prepare_seconds: float = 0.0,
) -> dict[str, Any]:
    method: Distiller = params["method"]
    start = time.perf_counter()
    if isinstance(method, PreparedDistiller):
        summary = method.distill_prepared(
            dataset.train, params["ipc"], prepared, seed=params["seed"], device=device, progress=progress
        )
    else:
        summary = method.distill(
            dataset.train, params["ipc"], seed=params["seed"], device=device, progress=progress
        )
    # The cost of a summary includes its preparation (experts are part of MTT's price).
    seconds = time.perf_counter() - start + float(prepare_seconds)
    row = params["row"]
    grid = Figure(f"summary_{row}", image_grid_png(summary.data, title=f"{row} (ipc={params['ipc']})"))
    saved = {"images": summary.data.x, "labels": summary.data.y, "mean": torch.tensor(summary.data.mean),
             "std": torch.tensor(summary.data.std)}
    if summary.soft_labels is not None:
        saved["soft_labels"] = summary.soft_labels
    tensors = Tensors(f"summary_{row}", saved)
    return {
        f"summary_{row}": summary,
        f"grid_{row}": grid,
        f"tensors_{row}": tensors,
        f"distill_seconds_{row}": seconds,
    }


def evaluate(
    archs: list[str],
    dataset: DatasetSplits,
    params: Mapping[str, Any],
    device: torch.device,
    workers: int = 1,
    summary: Summary | None = None,
    progress: Progress = null_progress,
) -> list[dict[str, Any]]:
    """Score every architecture with one proxy; ``[{arch, value, seconds}]``."""
    ctx = ProxyContext(
        space=params["space"],
        dataset=dataset,
        train_data=summary.data if summary is not None else dataset.train,
        device=device,
        seed=params["seed"],
        setting_prefix=params["setting_prefix"],
        soft_labels=summary.soft_labels if summary is not None else None,
        label_loss=summary.label_loss if summary is not None else "ce",
    )
    return score_all(params["proxy"], archs, ctx, workers=workers, progress=progress)


def _components(row: str, score: Mapping[str, Any]) -> dict[str, float]:
    """A combining proxy's per-arch components as flat ``<row>.<component>`` scalars (else none)."""
    return {f"{row}.{k}": float(v) for k, v in score.get("components", {}).items()}


def report(
    archs: list[str],
    reference: list[dict[str, Any]],
    params: Mapping[str, Any],
    ledger=None,
    **inputs: Any,
) -> dict[str, Any]:
    """Rank preservation of every proxy row against the reference, plus plots and the ledger."""
    cfg: ReportConfig = params["report"]
    space: SearchSpace = params["space"]
    ref = [r["value"] for r in reference]
    ref_seconds = sum(r["seconds"] for r in reference)
    rows, metrics, per_arch = [], {}, {a: {"arch": a, "reference": r["value"]} for a, r in zip(archs, reference)}
    scatter = {}
    for row in params["rows"]:
        scores = inputs[f"scores_{row['name']}"]
        values = [s["value"] for s in scores]
        distill_s = float(inputs[f"distill_seconds_{row['name']}"]) if row["distilled"] else 0.0
        m = rank_metrics(values, ref, k=cfg.top_k, n_boot=cfg.bootstrap, ci=cfg.ci, seed=cfg.seed)
        proxy_s = distill_s + sum(s["seconds"] for s in scores)
        rows.append(
            {
                "proxy": row["name"],
                "kind": row["kind"],
                **m.as_dict(),
                "mean_value": sum(values) / len(values),
                "distill_seconds": distill_s,
                "proxy_seconds": proxy_s,
                "reference_seconds": ref_seconds,
            }
        )
        for key, val in m.as_dict().items():
            metrics[f"{row['name']}.{key}"] = val
        metrics[f"{row['name']}.proxy_seconds"] = proxy_s
        for a, s in zip(archs, scores):
            per_arch[a][row["name"]] = s["value"]
            per_arch[a][f"{row['name']}_seconds"] = s["seconds"]
            per_arch[a].update(_components(row["name"], s))
        scatter[row["name"]] = (values, ref)
        if ledger is not None:
            ledger.record(
                f"{params['run_name']}/{row['name']}",
                [
                    {
                        "arch": a,
                        "code": space.encode(a),
                        "value": s["value"],
                        "reference": r["value"],
                        "proxy_seconds": s["seconds"],
                        "reference_seconds": r["seconds"],
                        **_components(row["name"], s),
                    }
                    for a, s, r in zip(archs, scores, reference)
                ],
                cardinalities=space.cardinalities(),
                attrs={"proxy": row["name"], "kind": row["kind"]},
            )
    metrics["reference.mean"] = sum(ref) / len(ref)
    metrics["reference.seconds"] = ref_seconds
    summary = {
        "rows": rows,
        "num_archs": len(archs),
        "top_k": cfg.top_k,
        "ci": cfg.ci,
        "reference_mean": sum(ref) / len(ref),
        "reference_min": min(ref),
        "reference_max": max(ref),
        "reference_seconds": ref_seconds,
    }
    return {
        "report": summary,
        "metrics": Metrics(metrics),
        "results": Table("results", list(per_arch.values())),
        "rank_table": Table("rank_table", rows),
        "scatter": Figure(
            "proxy_vs_reference",
            scatter_png(scatter, xlabel="proxy test accuracy %", ylabel="reference test accuracy %"),
        ),
    }


def is_tracked_output(name: str) -> bool:
    """Outputs worth logging again when their stage is cached: small figures and tables."""
    return name.startswith(("grid_", "tensors_", "scores_")) or name in {"metrics", "results", "rank_table", "scatter", "reference"}


# -- graph --------------------------------------------------------------------
def build_graph(config: PipelineConfig) -> Graph:
    """The stage graph of ``config``: one distill+proxy branch per method, one stage per baseline."""
    space = config.space
    stages = [
        Stage("load_data", load_data, inputs=(), outputs=("dataset",), params=config.data),
        Stage(
            "sample_archs",
            sample_archs,
            inputs=(),
            outputs=("archs",),
            params={"space": space, "sample": config.sample},
        ),
    ]
    rows = []
    for name, method in config.distill.methods.items():
        distill_inputs, renames = ("dataset",), {}
        if isinstance(method, PreparedDistiller):
            stages.append(
                Stage(
                    f"prepare_{name}",
                    _bind(prepare, {}),
                    inputs=("dataset",),
                    outputs=(f"prepared_{name}", f"prepare_seconds_{name}"),
                    # keyed by the preparation settings only: tuning the distillation reuses the experts
                    params={
                        "row": name,
                        "distiller": method.name,
                        "settings": method.prepare_params(),
                        "seed": config.distill.seed,
                    },
                )
            )
            distill_inputs = ("dataset", f"prepared_{name}", f"prepare_seconds_{name}")
            renames = {"prepared": f"prepared_{name}", "prepare_seconds": f"prepare_seconds_{name}"}
        stages.append(
            Stage(
                f"distill_{name}",
                _bind(distill, renames),
                inputs=distill_inputs,
                outputs=(f"summary_{name}", f"grid_{name}", f"tensors_{name}", f"distill_seconds_{name}"),
                params={"row": name, "method": method, "ipc": config.distill.ipc, "seed": config.distill.seed},
            )
        )
        stages.append(
            Stage(
                f"proxy_{name}",
                _bind(evaluate, {"summary": f"summary_{name}"}),
                inputs=("archs", "dataset", f"summary_{name}"),
                outputs=(f"scores_{name}",),
                params={"proxy": config.proxy, "space": space, "seed": config.seed, "setting_prefix": "proxy"},
            )
        )
        rows.append({"name": name, "kind": "distilled", "distilled": True})
    for name, proxy in config.baselines.items():
        stages.append(
            Stage(
                f"baseline_{name}",
                _bind(evaluate, {}),
                inputs=("archs", "dataset"),
                outputs=(f"scores_{name}",),
                params={"proxy": proxy, "space": space, "seed": config.seed, "setting_prefix": f"baselines.{name}"},
            )
        )
        rows.append({"name": name, "kind": "baseline", "distilled": False})
    stages.append(
        Stage(
            "reference",
            _bind(evaluate, {}),
            inputs=("archs", "dataset"),
            outputs=("reference",),
            params={"proxy": config.reference, "space": space, "seed": config.seed, "setting_prefix": "reference"},
        )
    )
    report_inputs = ["archs", "reference"]
    for row in rows:
        report_inputs.append(f"scores_{row['name']}")
        if row["distilled"]:
            report_inputs.append(f"distill_seconds_{row['name']}")
    stages.append(
        Stage(
            "report",
            report,
            inputs=tuple(report_inputs),
            outputs=("report", "metrics", "results", "rank_table", "scatter"),
            params={"report": config.report, "space": space, "rows": rows, "run_name": config.run.name},
        )
    )
    return Graph(stages)


def _bind(func, renames: Mapping[str, str]):
    """Adapt a generic stage function to graph names (e.g. ``summary_dm`` -> ``summary``)."""
    import functools
    import inspect

    if not renames:
        return func

    @functools.wraps(func)
    def wrapper(**kwargs):
        for param, name in renames.items():
            kwargs[param] = kwargs.pop(name)
        return func(**kwargs)

    sig = inspect.signature(func)
    wrapper.__signature__ = sig.replace(
        parameters=[
            p.replace(name=next((n for k, n in renames.items() if k == p.name), p.name))
            for p in sig.parameters.values()
        ]
    )
    return wrapper
