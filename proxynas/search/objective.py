"""What a search maximises: one architecture in, one scored evaluation out.

:class:`ProxyObjective` scores an arch exactly as a pipeline row does -- it
takes the row's dataset and distilled summary from the pipeline's runner (so
they are computed once and then read from the stage cache) and calls
:func:`proxynas.pipeline.evaluate` with that row's own stage settings. A search
driven by the ``dm`` row therefore trains each candidate the way ``proxynas
run`` trained the sampled ones (Cui et al., "DC-BENCH: Dataset Condensation
Benchmark", NeurIPS 2022 Datasets & Benchmarks, Sec. 3.4: NAS on distilled
data). :class:`TableObjective` looks a benchmark column up instead (the
parameter-count baseline, or the ground truth itself as an oracle bound), and
:class:`CachedObjective` keeps scores in a JSON file so that repeated searches
(seeds, samplers) train each architecture once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from proxynas.config.pipeline import PipelineConfig
from proxynas.data.types import DatasetSplits
from proxynas.distill.base import Summary
from proxynas.engine.cache import value_key
from proxynas.errors import ConfigError, DataError
from proxynas.spaces.base import SearchSpace

#: ``row`` naming the pipeline's reference (its ground truth) instead of a proxy row
REFERENCE_ROW = "reference"


@dataclass(frozen=True)
class Evaluation:
    """One scored architecture: its value (higher is better) and what computing it cost.

    ``seconds`` is the cost of the evaluation even when ``cached`` (read back
    from a score cache), so a search's reported cost does not depend on
    whether an earlier run already paid it.
    """

    value: float
    seconds: float
    cached: bool = False


class ArchObjective(ABC):
    """Scores canonical arch strings of one search space."""

    #: a short name for tables and MLflow (``dm``, ``params``, ``oracle``)
    name: str
    #: a content key of everything the score depends on (for persistent caches)
    key: str
    #: one-off cost paid before the first evaluation (e.g. distilling the summary)
    setup_seconds: float = 0.0

    @abstractmethod
    def evaluate(self, arch: str) -> Evaluation:
        """Score ``arch``."""

    def num_params(self, arch: str) -> float:
        """The model size of ``arch``, for multi-objective search (lower is cheaper)."""
        raise ConfigError(f"objective {self.name} cannot count parameters; use --cost seconds")


def _refuse_population_proxy(row: str, proxy: Any) -> None:
    """A combining proxy (rank aggregation over a population) has no per-arch value to search on."""
    if getattr(proxy, "combines", False):
        name = getattr(proxy, "name", type(proxy).__name__)
        raise ConfigError(
            f"row {row!r} ({name}) ranks a population of archs together and cannot score one arch at a time"
            " (search, tune); use it in `proxynas run`, or search/tune with another row"
        )


@dataclass(frozen=True, eq=False)
class ProxyObjective(ArchObjective):
    """A pipeline row (distilled summary + proxy, or a baseline) as a search objective.

    Build it with :meth:`from_pipeline`; the fields are what one evaluation
    needs: the row's stage settings (``params`` of its ``proxy_<row>`` /
    ``baseline_<row>`` stage), the dataset and summary from the runner.
    A component row (``dm:sotl_5``, one of several values of one training)
    scores an arch by that value (``component``).
    """

    name: str
    space: SearchSpace
    dataset: DatasetSplits
    params: Mapping[str, Any]
    device: torch.device
    summary: Summary | None
    key: str
    setup_seconds: float = 0.0
    #: the named value a component row reads (None: the proxy's value)
    component: str | None = None
    #: the teacher a relabelled row (``dm+teacher``) learns from
    teacher: Any = None
    #: CPU threads while scoring. One, as in proxynas.evaluation's workers: a
    #: small cell network is bound by per-operator overhead, and on shared
    #: cores a second OpenMP thread makes steps stall (measured here: 0.03 s
    #: per toy evaluation with one thread, up to 2 s with two on a loaded box).
    threads: int = 1

    def __post_init__(self) -> None:
        _refuse_population_proxy(self.name, self.params.get("proxy"))

    @classmethod
    def from_pipeline(
        cls, config: PipelineConfig, row: str, *, runner=None, hooks: Sequence = (), threads: int = 1
    ) -> "ProxyObjective":
        """The objective of row ``row`` of ``config``: a ``distill.methods`` name, a ``baselines``
        name, or ``reference`` (the pipeline's ground truth, i.e. an oracle search).

        Runs only the stages that row needs (``load_data``, and ``distill_<row>``
        for a distilled row), from the cache when they are there.
        """
        from proxynas.app import build_runner
        from proxynas.pipeline import build_graph

        pipeline = build_graph(config)
        runner = runner if runner is not None else build_runner(config, hooks, pipeline=pipeline)
        graph = runner.graph
        component, teacher_name, teacher_seconds = None, None, None
        if row == REFERENCE_ROW:
            stage, targets, summary_name, seconds_name = graph.stage(pipeline.reference), ["load_data"], None, None
        else:
            if row not in {r.name for r in pipeline.rows}:
                rows = [*(r.name for r in pipeline.rows), REFERENCE_ROW]
                raise ConfigError(
                    f"pipeline {config.run.name} has no row {row!r}; choose one of: {', '.join(rows)}"
                    " (distill.methods, baselines, or the reference)"
                )
            found = pipeline.row(row)
            if found.kind == "combined":
                raise ConfigError(
                    f"row {row!r} combines rows by rank over the sampled archs and cannot score one arch at a"
                    " time (search, tune); search with one of its rows: " + ", ".join(found.sources)
                )
            stage = graph.stage(found.stage)
            targets = [found.distill_stage] if found.distilled else ["load_data"]
            summary_name, seconds_name = found.summary, found.distill_seconds
            component = found.component
            if found.teacher_stage:
                targets.append(found.teacher_stage)
                teacher_name, teacher_seconds = found.teacher, found.teacher_seconds
        # before runner.run: refuse before distilling a summary that could not be used
        _refuse_population_proxy(row, stage.params.get("proxy"))
        outputs = runner.run(targets=targets)
        summary = outputs[summary_name] if summary_name else None
        setup = sum(float(outputs[name]) for name in (seconds_name, teacher_seconds) if name)
        keys = {s.name: s.key for s in runner.status(targets=targets)}
        upstream = {i: keys[graph.producer(i).name] for i in stage.inputs if i != "archs"}
        what = {"objective": "proxynas.search.proxy", "inputs": upstream, "params": stage.params}
        key = value_key(what if component is None else {**what, "component": component})
        return cls(
            name=row,
            space=config.space,
            dataset=outputs["dataset"],
            params=stage.params,
            device=runner.resources["device"],
            summary=summary,
            key=key,
            setup_seconds=setup,
            threads=threads,
            component=component,
            teacher=outputs[teacher_name] if teacher_name else None,
        )

    def evaluate(self, arch: str) -> Evaluation:
        from proxynas.pipeline import evaluate

        previous = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        try:
            # The pipeline's own stage function, on a one-arch list: same ProxyContext
            # (summary images, soft labels, label loss, seed), same timing.
            (result,) = evaluate(
                [arch], self.dataset, self.params, self.device, workers=1, summary=self.summary, teacher=self.teacher
            )
        finally:
            torch.set_num_threads(previous)
        value = result["value"] if self.component is None else result["values"][self.component]
        return Evaluation(float(value), float(result["seconds"]))

    def num_params(self, arch: str) -> float:
        c, h, _ = self.dataset.shape
        return float(self.space.num_params(arch, in_channels=c, num_classes=self.dataset.num_classes, image_size=h))


@dataclass(frozen=True, eq=False)
class TableObjective(ArchObjective):
    """Column ``column`` of a benchmark table as the objective (no training).

    With NAS-Bench-201's ``params_MB`` it is the parameter-count baseline;
    with the column the regret is measured against, the oracle bound (the
    best any proxy could do in the same number of trials). ``sign=-1``
    minimises the column. ``num_params`` reads ``params_column``.
    """

    table: Any  # an NB201Table (anything with lookup(arch, column) and columns)
    column: str
    name: str = ""
    sign: float = 1.0
    params_column: str = "params_MB"

    def __post_init__(self) -> None:
        if self.column not in self.table.columns:
            raise ConfigError(
                f"table {self.table.source} has no column {self.column!r}; available: {', '.join(self.table.columns)}"
            )
        if not self.name:
            object.__setattr__(self, "name", self.column)

    @property
    def key(self) -> str:
        # by content, not by file path: the packaged table's path depends on where proxynas is installed
        values = self.table.column(self.column)
        digest = hashlib.sha256(repr(sorted(values.items())).encode()).hexdigest()
        return value_key({"objective": "proxynas.search.table", "column": self.column, "values": digest,
                          "sign": self.sign})

    def evaluate(self, arch: str) -> Evaluation:
        start = time.perf_counter()
        value = self.sign * self.table.lookup(arch, self.column)
        return Evaluation(value, time.perf_counter() - start)

    def num_params(self, arch: str) -> float:
        if self.params_column not in self.table.columns:
            return super().num_params(arch)
        return self.table.lookup(arch, self.params_column)


class CachedObjective(ArchObjective):
    """``inner`` with a persistent score cache: ``{arch: (value, seconds)}`` in a JSON file.

    The file is named by ``inner.key``, so a change to anything the score
    depends on (summary, proxy settings, seed) starts a new file rather than
    returning stale scores. Each new score is merged into the file and written
    atomically, so concurrent or interrupted runs lose nothing already written.
    ``folder=None`` keeps the cache in memory only.
    """

    def __init__(self, inner: ArchObjective, folder: str | os.PathLike | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.key = inner.key
        self.setup_seconds = inner.setup_seconds
        self.path = Path(folder) / f"{inner.name}-{inner.key[:16]}.json" if folder is not None else None
        self._scores: dict[str, tuple[float, float]] = self._read()

    def _read(self) -> dict[str, tuple[float, float]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"score cache {self.path} is unreadable ({exc}); delete it to start afresh") from None
        if data.get("key") != self.key:
            raise DataError(f"score cache {self.path} belongs to another objective; delete it to start afresh")
        return {a: (float(v), float(s)) for a, (v, s) in data["scores"].items()}

    def _write(self) -> None:
        merged = {**self._read(), **self._scores}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": self.key, "objective": self.name, "scores": merged}))
        os.replace(tmp, self.path)
        self._scores = merged

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, arch: object) -> bool:
        return arch in self._scores

    def evaluate(self, arch: str) -> Evaluation:
        hit = self._scores.get(arch)
        if hit is not None:
            return Evaluation(hit[0], hit[1], cached=True)
        ev = self.inner.evaluate(arch)
        self._scores[arch] = (ev.value, ev.seconds)
        if self.path is not None:
            self._write()
        return ev

    def num_params(self, arch: str) -> float:
        return self.inner.num_params(arch)
