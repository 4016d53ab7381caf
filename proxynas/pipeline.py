"""The proxy-evaluation pipeline as a stage graph built from a :class:`PipelineConfig`.

    load_data ─┬─ distill_<m> ──┬─ proxy_<m> ──────────┐
               │                └─ proxy_<m>-teacher ──┤
               ├─ teacher ─────────────┘               │
    sample_archs ┼───────────── baseline_<b> ──────────┼─ report
               └─────────────── reference ─────────────┘

Stages are plain functions of named inputs; the runner caches each output by
content, so changing e.g. ``distill.methods.dm.iterations`` recomputes only
``distill_dm``, ``proxy_dm`` and ``report``.

A proxy with several named values (``Proxy.value_names()``, e.g. ``train``
with ``scores: [val_acc, sotl_5]``) makes one report row per name from its
one stage: ``dm`` for the first, ``dm:sotl_5`` for the others (:class:`Row`'s
``component``). A proxy that trains also gives its stage a ``curves_<row>``
table (arch, epoch, train_loss, val_loss, val_acc per epoch), drawn by
``report`` as the figure ``learning_curves_<row>``.

With ``teacher.relabel`` a ``teacher`` stage trains one network once, and each
listed summary gets a row ``<m>+teacher`` scored by ``proxy_<m>-teacher``
(stage names take no ``+``). A ``combined`` row is computed in ``report``
from its source rows; a few-shot one scores only the archs it was not fit on.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping

import torch

from proxynas.artifacts import Evaluations, Figure, Metrics, Table, Tensors
from proxynas.config.pipeline import CombinedRow, PipelineConfig, ReportConfig
from proxynas.data.types import DatasetSplits
from proxynas.data.zca import displayable, whiten_splits
from proxynas.distill.base import DISTILLERS, Distiller, PreparedDistiller, Summary
from proxynas.distill.checkpoint import Checkpoint
from proxynas.engine import Graph, Stage
from proxynas.engine.journal import Journal
from proxynas.evaluation import score_all
from proxynas.metrics.aggregation import log_rank_aggregate
from proxynas.metrics.few_shot import few_shot_combination
from proxynas.metrics.rank import rank_metrics
from proxynas.plots import image_grid_png, learning_curves_png, rank_title, rank_vs_rank_png, scatter_png
from proxynas.progress import Progress, null_progress
from proxynas.proxies.base import ProxyContext
from proxynas.sampling import stratified_sample, top_sample
from proxynas.spaces.base import SearchSpace
from proxynas.teacher import CONVNET, Teacher, relabelled_graph_name, relabelled_row, train_teacher


# -- stage functions ----------------------------------------------------------
def load_data(params) -> DatasetSplits:
    return params.load()


def load_whitened_data(params: Mapping[str, Any]) -> DatasetSplits:
    """The dataset (``params["data"]``) whitened by a ZCA fitted on its training split (``params["zca"]``).

    One stage, so the fit is cached with the splits it whitened and every later
    stage (distillers, proxies, the reference) reads the same whitened images.
    """
    return whiten_splits(params["data"].load(), params["zca"])


def sample_archs(params: Mapping[str, Any]) -> list[str]:
    space: SearchSpace = params["space"]
    sample = params["sample"]
    if sample.strategy in ("stratified", "top"):
        from proxynas.reference import load_table

        reference = load_table(sample.table, setting="sample.table").column(sample.column)
        if sample.strategy == "top":
            return top_sample(space, reference, sample.num_archs, fraction=sample.fraction, seed=sample.seed)
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
    journal: Journal | None = None,
) -> dict[str, Any]:
    """Distil the training split; a killed distillation resumes from its last checkpoint in ``journal``."""
    method: Distiller = params["method"]
    start = time.perf_counter()
    checkpoint = _TimedCheckpoint(journal if journal is not None else Journal(), start)
    if isinstance(method, PreparedDistiller):
        entry, extra = method.distill_prepared, {}
        args = (dataset.train, params["ipc"], prepared)
    else:
        # a distiller matching through the space's own cells is handed the space (it is then in the key)
        entry, extra = method.distill, ({"space": params["space"]} if method.needs_space else {})
        args = (dataset.train, params["ipc"])
    if "checkpoint" in inspect.signature(entry).parameters:  # a plug-in may predate checkpoints
        extra["checkpoint"] = checkpoint
    summary = entry(*args, seed=params["seed"], device=device, progress=progress, **extra)
    # The cost of a summary includes its preparation (experts are part of MTT's price) and the
    # time killed attempts spent up to their last checkpoint.
    seconds = checkpoint.before + time.perf_counter() - start + float(prepare_seconds)
    row = params["row"]
    shown = displayable(summary.data, dataset)  # whitened images are un-whitened to be looked at
    grid = Figure(f"summary_{row}", image_grid_png(shown, title=f"{row} (ipc={params['ipc']})"))
    saved = {"images": summary.data.x, "labels": summary.data.y, "mean": torch.tensor(summary.data.mean),
             "std": torch.tensor(summary.data.std)}
    if summary.soft_labels is not None:
        saved["soft_labels"] = summary.soft_labels
    if summary.learned_lr is not None:
        saved["learned_lr"] = torch.tensor(summary.learned_lr)
    if summary.learned_schedule is not None:
        saved["learned_step_sizes"] = torch.tensor(summary.learned_schedule.step_sizes)
    tensors = Tensors(f"summary_{row}", saved)
    return {
        f"summary_{row}": summary,
        f"grid_{row}": grid,
        f"tensors_{row}": tensors,
        f"distill_seconds_{row}": seconds,
    }


class _TimedCheckpoint(Checkpoint):
    """A distiller's checkpoint that also keeps the distillation time spent up to it."""

    def __init__(self, journal: Journal, start: float) -> None:
        super().__init__(journal)
        self.start = start
        #: seconds earlier, killed attempts spent up to their last checkpoint (written with each
        #: save, so read without loading the state the distiller restores itself)
        self.before = float(journal.get(_ELAPSED) or 0.0)

    def save(self, iteration: int, state: dict[str, Any]) -> None:
        super().save(iteration, state)
        self.journal.put(_ELAPSED, self.before + time.perf_counter() - self.start)


_ELAPSED = "elapsed_seconds"


def evaluate(
    archs: list[str],
    dataset: DatasetSplits,
    params: Mapping[str, Any],
    device: torch.device,
    workers: int = 1,
    summary: Summary | None = None,
    progress: Progress = null_progress,
    teacher: Teacher | None = None,
    storage: str | None = None,
    stage_key: str = "",
    journal: Journal | None = None,
) -> list[dict[str, Any]]:
    """Score every architecture with one proxy; ``[{arch, value, seconds}]`` (see :func:`score_all`).

    With a ``storage`` URL (``run.storage``) the archs are shared with every
    other process running this stage, one Optuna trial per arch in the study
    named after the stage's key (:func:`~proxynas.distributed_scoring.score_distributed`).
    Otherwise each finished arch goes to the stage's ``journal``, so a killed
    run resumes with the archs not yet scored.

    With a ``teacher`` a training proxy learns the teacher's labels of every
    augmented batch at ``params["temperature"]`` (see :mod:`proxynas.teacher`).
    ``progress`` hears about every finished architecture and, when they run in
    this process, about every epoch of the one in training (``epoch``/``loss``).
    """
    ctx = ProxyContext(
        space=params["space"],
        dataset=dataset,
        train_data=summary.data if summary is not None else dataset.train,
        device=device,
        seed=params["seed"],
        setting_prefix=params["setting_prefix"],
        soft_labels=summary.soft_labels if summary is not None else None,
        label_loss=summary.label_loss if summary is not None else "ce",
        learned_lr=summary.learned_lr if summary is not None else None,
        learned_schedule=summary.learned_schedule if summary is not None else None,
        teacher=teacher.model if teacher is not None else None,
        temperature=float(params.get("temperature", 4.0)),
    )
    if storage:
        from proxynas.distributed_scoring import score_distributed  # imports Optuna: only when asked

        return score_distributed(
            params["proxy"], archs, ctx, storage=storage, study_name=f"proxynas-{stage_key}", progress=progress
        )
    return score_all(params["proxy"], archs, ctx, workers=workers, progress=progress, journal=journal)


def curve_table(name: str, scores: list[dict[str, Any]]) -> Table:
    """The learning curves of every scored arch as one table: arch, epoch, steps, train_loss, val_loss, val_acc."""
    return Table(name, [{"arch": s["arch"], **point} for s in scores for point in s.get("curve", ())])


def _with_curves(func, scores: str, curves: str):
    """A stage function returning ``{scores: results, curves: curve_table(results)}`` from ``func``'s results."""

    @functools.wraps(func)  # the runner reads func's signature through __wrapped__
    def stage(**kwargs):
        results = func(**kwargs)
        return {scores: results, curves: curve_table(curves, results)}

    return stage


def row_values(row: "Row", scores: list[dict[str, Any]]) -> list[float]:
    """The values of ``row`` from its stage's scores: each arch's ``value``, or its named ``component``."""
    if row.component is None:
        return [s["value"] for s in scores]
    return [s["values"][row.component] for s in scores]


def metric_name(name: str) -> str:
    """``name`` as an MLflow metric key (``dm:val_acc@25%`` -> ``dm:val_acc_at_25pct``)."""
    return re.sub(r"[^\w.\- :/]", "_", name.replace("@", "_at_").replace("%", "pct"))


def _components(row: str, score: Mapping[str, Any]) -> dict[str, float]:
    """A combining proxy's per-arch components as flat ``<row>.<component>`` scalars (else none)."""
    return {f"{row}.{k}": float(v) for k, v in score.get("components", {}).items()}


def _scored_rows(archs: list[str], rows: tuple[Row, ...], inputs: Mapping[str, Any], reference: list[float]):
    """``(row, scored arch indices, scores, values, distill seconds)`` of every row.

    Combined rows come from their sources. A combined row's per-arch seconds
    (and its distillation) are those of the distinct stages it reads, so a
    summary's two rows are not counted twice. Every row scores every arch but
    a few-shot row, which scores only the archs it was not fit on.
    """
    done: dict[str, tuple[Row, list, list[float], float]] = {}
    everyone = list(range(len(archs)))
    for row in rows:
        if row.kind != "combined":
            scores = inputs[row.scores]
            distill_s = sum(float(inputs[name]) for name in (row.distill_seconds, row.teacher_seconds) if name)
            done[row.name] = (row, scores, row_values(row, scores), distill_s)
            yield (row, everyone, *done[row.name][1:])
    for row in rows:
        if row.kind == "combined":
            parts = [done[name] for name in row.sources]
            columns = {p[0].name: p[2] for p in parts}
            spec = row.combination
            if spec is not None and spec.method == "few_shot":
                fit = few_shot_combination(columns, reference, k=spec.k, seed=spec.seed)
                indices, values = list(fit.held_out), list(fit.values)
            else:
                indices, values = everyone, log_rank_aggregate(columns)
            stages = {p[0].stage: p for p in parts}
            scores = [
                {"arch": archs[i], "value": v, "seconds": sum(p[1][i]["seconds"] for p in stages.values())}
                for i, v in zip(indices, values)
            ]
            yield row, indices, scores, values, sum(p[3] for p in stages.values())


def report(
    archs: list[str],
    reference: list[dict[str, Any]],
    params: Mapping[str, Any],
    **inputs: Any,
) -> dict[str, Any]:
    """Rank preservation of every proxy row against the reference, plots, and the rows' evaluations.

    The evaluations (one :class:`~proxynas.artifacts.Evaluations` per row) are
    what the ledger hook records; this stage writes nowhere itself. Figures:
    proxy value against reference (``scatter``) and rank against rank
    (``rank_vs_rank``), each panel titled with its row's Spearman and Kendall,
    and one learning-curve figure per ``params["curves"]`` entry
    ``(title, scores input, output)`` (see :func:`curve_figures`).
    """
    cfg: ReportConfig = params["report"]
    space: SearchSpace = params["space"]
    ref = [r["value"] for r in reference]
    ref_seconds = sum(r["seconds"] for r in reference)
    rows, metrics, per_arch = [], {}, {a: {"arch": a, "reference": r["value"]} for a, r in zip(archs, reference)}
    scatter, titles, evaluations = {}, {}, []
    row: Row
    for row, indices, scores, values, distill_s in _scored_rows(archs, params["rows"], inputs, ref):
        row_archs, row_ref, row_reference = ([archs[i] for i in indices], [ref[i] for i in indices],
                                             [reference[i] for i in indices])
        m = rank_metrics(values, row_ref, k=cfg.top_k, n_boot=cfg.bootstrap, ci=cfg.ci, seed=cfg.seed)
        proxy_s = distill_s + sum(s["seconds"] for s in scores)
        rows.append(
            {
                "proxy": row.name,
                "kind": row.kind,
                **m.as_dict(),
                "num_archs": len(values),
                "mean_value": sum(values) / len(values),
                "distill_seconds": distill_s,
                "proxy_seconds": proxy_s,
                "reference_seconds": ref_seconds,
            }
        )
        for key, val in m.as_dict().items():
            metrics[metric_name(f"{row.name}.{key}")] = val
        metrics[metric_name(f"{row.name}.proxy_seconds")] = proxy_s
        # a component row shares its stage's seconds and components with the row of the first value
        components = [_components(row.name, s) if row.component is None else {} for s in scores]
        for a, s, v, c in zip(row_archs, scores, values, components):
            per_arch[a][row.name] = v
            if row.component is None:
                per_arch[a][f"{row.name}_seconds"] = s["seconds"]
            per_arch[a].update(c)
        scatter[row.name] = (values, row_ref)
        titles[row.name] = rank_title(row.name, m.as_dict(), cfg.ci)
        evaluations.append(
            Evaluations(
                row=row.name,
                records=tuple(
                    {
                        "arch": a,
                        "code": space.encode(a),
                        "value": v,
                        "reference": r["value"],
                        "proxy_seconds": s["seconds"],
                        "reference_seconds": r["seconds"],
                        **c,
                    }
                    for a, s, v, c, r in zip(row_archs, scores, values, components, row_reference)
                ),
                cardinalities=tuple(space.cardinalities()),
                attrs={"proxy": row.name, "kind": row.kind},
            )
        )
    # a few-shot row has no value on the archs it was fit on: their cell is empty, not missing
    columns = dict.fromkeys(k for r in per_arch.values() for k in r)
    for record in per_arch.values():
        for key in columns:
            record.setdefault(key, None)
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
            scatter_png(scatter, xlabel="proxy value", ylabel="reference value", titles=titles),
        ),
        RANK_VS_RANK: Figure(RANK_VS_RANK, rank_vs_rank_png(scatter, titles=titles, top_k=cfg.top_k)),
        **_learning_curves(params.get("curves", ()), {REFERENCE: reference, **inputs}, archs, ref, cfg.top_k),
        EVALUATIONS: evaluations,
    }


def _learning_curves(
    specs, scores_by_name: Mapping[str, list[dict[str, Any]]], archs: list[str], ref: list[float], top_k: int
) -> dict[str, Figure]:
    """One learning-curve figure per ``(title, scores input, output)``, the reference's top-k archs highlighted."""
    top = {a for a, _ in sorted(zip(archs, ref), key=lambda p: -p[1])[:top_k]}
    figures = {}
    for title, scores, output in specs:
        curves = {s["arch"]: s.get("curve", ()) for s in scores_by_name[scores]}
        png = learning_curves_png(curves, highlight=top, highlight_label=f"reference top {len(top)}",
                                  title=f"{title}: learning curves of {len(curves)} archs")
        figures[output] = Figure(output, png)
    return figures


def curve_figures(stages: list[Stage], rows: tuple[Row, ...] | list[Row]) -> tuple[tuple[str, str, str], ...]:
    """``(title, scores, figure)`` of every stage with a ``curves_<x>`` table: figure ``learning_curves_<x>``.

    One per stage, not per row: a proxy's component rows share its stage and so
    its curves; the reference's stage gets one too when its proxy trains.
    """
    by_name = {s.name: s for s in stages}
    titled = [(r.name, r.stage, r.scores) for r in rows if r.kind != "combined" and r.component is None]
    out = []
    for title, stage, scores in [*titled, (REFERENCE, REFERENCE, REFERENCE)]:
        table = next((o for o in by_name[stage].outputs if o.startswith("curves_")), None)
        if table is not None:
            out.append((title, scores, f"learning_{table}"))
    return tuple(out)


def is_tracked_output(name: str) -> bool:
    """Outputs worth logging again when their stage is cached: small figures and tables."""
    return name.startswith(("grid_", "tensors_", "scores_", "curves_", "learning_curves_")) or name in {
        "metrics", "results", "rank_table", "scatter", RANK_VS_RANK, "reference"
    }


# -- graph --------------------------------------------------------------------
#: the report output the ledger hook records (one Evaluations per row)
EVALUATIONS = "evaluations"
#: the report's figure of reference rank against proxy rank
RANK_VS_RANK = "rank_vs_rank"
REFERENCE = "reference"
TEACHER = "teacher"
TEACHER_SECONDS = "teacher_seconds"


@dataclass(frozen=True)
class Row:
    """One proxy row of the report, with the graph names that belong to it.

    Search, report and ``--jobs`` read these instead of rebuilding names by
    string formatting. ``distill_stage``/``summary``/``distill_seconds`` are set
    for a distilled row only. ``component`` names the value of a proxy with
    several (``dm:sotl_5`` reads ``sotl_5`` of each arch's ``values``); None
    reads each arch's ``value``. Rows of one proxy share its stage and scores.
    """

    name: str
    kind: Literal["distilled", "baseline", "combined"]
    #: the stage that scores the archs, and its output (a combined row: ``report``, none)
    stage: str
    scores: str
    distill_stage: str | None = None
    summary: str | None = None
    distill_seconds: str | None = None
    component: str | None = None
    #: a combined row's source rows and how they are combined (:class:`~proxynas.config.pipeline.CombinedRow`)
    sources: tuple[str, ...] = ()
    combination: CombinedRow | None = None
    #: the ``distill.methods`` name whose summary the row trains on (distilled rows)
    method: str | None = None
    #: a relabelled row's teacher stage and outputs (see :mod:`proxynas.teacher`)
    teacher_stage: str | None = None
    teacher: str | None = None
    teacher_seconds: str | None = None

    @property
    def distilled(self) -> bool:
        return self.kind == "distilled"


@dataclass(frozen=True)
class PipelineGraph:
    """The stage graph of a pipeline and its proxy rows."""

    graph: Graph
    rows: tuple[Row, ...]
    #: the stage (and output) holding the reference scores
    reference: str = REFERENCE

    def row(self, name: str) -> Row:
        """The row called ``name`` (ConfigError naming the rows if there is none)."""
        from proxynas.errors import ConfigError

        for row in self.rows:
            if row.name == name:
                return row
        raise ConfigError(
            f"pipeline has no row {name!r}; choose one of: {', '.join(r.name for r in self.rows)}"
            " (distill.methods or baselines)"
        )


def random_subset_rows(config: PipelineConfig, pipeline: PipelineGraph) -> frozenset[str]:
    """The rows trained on a random subset (``distill.methods`` entries of the ``random`` coreset)."""
    return frozenset(
        row.name for row in pipeline.rows
        if row.method is not None and config.distill.methods[row.method].name == "random"
    )


def _proxy_stage(
    name: str, row: str, func, inputs: tuple[str, ...], scores: str, proxy, params: dict
) -> Stage:
    """Stage ``name`` scoring the archs with ``proxy``; a training proxy's also outputs ``curves_<row>``."""
    if proxy.records_curves:
        curves = f"curves_{row}"
        return Stage(name, _with_curves(func, scores, curves), inputs=inputs, outputs=(scores, curves),
                     params=params)
    return Stage(name, func, inputs=inputs, outputs=(scores,), params=params)


def _rows(first: Row, proxy) -> list[Row]:
    """``first`` and one component row ``<row>:<name>`` per further named value of ``proxy``."""
    names = proxy.value_names()
    return [first] + [replace(first, name=f"{first.name}:{c}", component=c) for c in names[1:]]


def build_graph(config: PipelineConfig) -> PipelineGraph:
    """The stage graph of ``config``: one distill+proxy branch per method, one stage per baseline."""
    space = config.space
    if config.zca is None:  # the stage and key the pipeline had before whitening existed
        load = Stage("load_data", load_data, inputs=(), outputs=("dataset",), params=config.data)
    else:
        load = Stage("load_data", load_whitened_data, inputs=(), outputs=("dataset",),
                     params={"data": config.data, "zca": config.zca})
    stages = [
        load,
        Stage(
            "sample_archs",
            sample_archs,
            inputs=(),
            outputs=("archs",),
            params={"space": space, "sample": config.sample},
        ),
    ]
    rows: list[Row] = []
    relabel = config.teacher.relabel
    if relabel:
        stages.append(
            Stage(
                TEACHER,
                train_teacher,
                inputs=("dataset",),
                outputs=(TEACHER, TEACHER_SECONDS),
                version="3",  # 2: flips drawn from each step's seed; 3: DSA's cutout/rotate as released
                # the student's temperature is not part of the teacher: changing it reuses the teacher
                params={
                    "settings": config.teacher.network_settings(),
                    "seed": config.seed,
                    **({"space": space} if config.teacher.arch != CONVNET else {}),
                },
            )
        )
    for name, method in config.distill.methods.items():
        row = Row(
            name=name,
            kind="distilled",
            stage=f"proxy_{name}",
            scores=f"scores_{name}",
            distill_stage=f"distill_{name}",
            summary=f"summary_{name}",
            distill_seconds=f"distill_seconds_{name}",
            method=name,
        )
        distill_inputs, renames = ("dataset",), {}
        if isinstance(method, PreparedDistiller):
            prepared, prepare_seconds = f"prepared_{name}", f"prepare_seconds_{name}"
            stages.append(
                Stage(
                    f"prepare_{name}",
                    _bind(prepare, {}),
                    inputs=("dataset",),
                    outputs=(prepared, prepare_seconds),
                    # keyed by the preparation settings only: tuning the distillation reuses the experts
                    params={
                        "row": name,
                        "distiller": method.name,
                        "settings": method.prepare_params(),
                        "seed": config.distill.seed,
                    },
                )
            )
            distill_inputs = ("dataset", prepared, prepare_seconds)
            renames = {"prepared": prepared, "prepare_seconds": prepare_seconds}
        stages.append(
            Stage(
                row.distill_stage,
                _bind(distill, renames),
                inputs=distill_inputs,
                outputs=(row.summary, f"grid_{name}", f"tensors_{name}", row.distill_seconds),
                params={
                    "row": name,
                    "method": method,
                    "ipc": config.distill.ipc,
                    "seed": config.distill.seed,
                    **({"space": space} if method.needs_space else {}),
                },
            )
        )
        stages.append(
            _proxy_stage(
                row.stage,
                name,
                _bind(evaluate, {"summary": row.summary}),
                ("archs", "dataset", row.summary),
                row.scores,
                config.proxy,
                {"proxy": config.proxy, "space": space, "seed": config.seed, "setting_prefix": "proxy"},
            )
        )
        rows += _rows(row, config.proxy)
    for name in relabel:
        base = next(r for r in rows if r.name == name)
        row = replace(
            base,
            name=relabelled_row(name),
            stage=f"proxy_{relabelled_graph_name(name)}",
            scores=f"scores_{relabelled_graph_name(name)}",
            teacher_stage=TEACHER,
            teacher=TEACHER,
            teacher_seconds=TEACHER_SECONDS,
        )
        stages.append(
            _proxy_stage(
                row.stage,
                relabelled_graph_name(name),
                _bind(evaluate, {"summary": row.summary}),
                ("archs", "dataset", row.summary, TEACHER),
                row.scores,
                config.proxy,
                {"proxy": config.proxy, "space": space, "seed": config.seed, "setting_prefix": "proxy",
                 "temperature": config.teacher.temperature},
            )
        )
        rows += _rows(row, config.proxy)
    for name, proxy in config.baselines.items():
        row = Row(name=name, kind="baseline", stage=f"baseline_{name}", scores=f"scores_{name}")
        stages.append(
            _proxy_stage(
                row.stage,
                name,
                evaluate,
                ("archs", "dataset"),
                row.scores,
                proxy,
                {"proxy": proxy, "space": space, "seed": config.seed, "setting_prefix": f"baselines.{name}"},
            )
        )
        rows += _rows(row, proxy)
    stages.append(
        _proxy_stage(
            REFERENCE,
            REFERENCE,
            evaluate,
            ("archs", "dataset"),
            REFERENCE,
            config.reference,
            {"proxy": config.reference, "space": space, "seed": config.seed, "setting_prefix": "reference"},
        )
    )
    report_inputs = ["archs", REFERENCE]
    for row in list(rows):
        if row.scores not in report_inputs:
            report_inputs.append(row.scores)
        for seconds in (row.distill_seconds, row.teacher_seconds):
            if seconds and seconds not in report_inputs:
                report_inputs.append(seconds)
    for name, spec in config.combined.items():
        rows.append(Row(name=name, kind="combined", stage="report", scores="", sources=tuple(spec.rows),
                        combination=spec))
    curves = curve_figures(stages, rows)
    stages.append(
        Stage(
            "report",
            report,
            inputs=tuple(report_inputs),
            outputs=("report", "metrics", "results", "rank_table", "scatter", RANK_VS_RANK,
                     *(figure for _, _, figure in curves), EVALUATIONS),
            params={"report": config.report, "space": space, "rows": tuple(rows), "curves": curves},
            version="2",  # 2: panels titled with Spearman/Kendall; rank-vs-rank and learning-curve figures
        )
    )
    return PipelineGraph(Graph(stages), tuple(rows))


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
