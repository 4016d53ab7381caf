"""The ``Proxy`` interface: one number per architecture that should rank like the reference.

Data proxies (train on a distilled summary), zero-cost proxies (score an
untrained network) and references (full-data training, a benchmark table) all
implement it, so each is one more row in the rank report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch

from proxynas.data.types import DatasetSplits, ImageData
from proxynas.distill.base import StepSchedule
from proxynas.fields import Checked
from proxynas.progress import Progress, null_progress
from proxynas.registry import Registry
from proxynas.spaces.base import SearchSpace

PROXIES: Registry[type["Proxy"]] = Registry("proxy")


@dataclass(frozen=True)
class ProxyContext:
    """What a proxy may look at for one evaluation.

    ``train_data`` is the data the proxy learns from: a distilled summary for
    data proxies, the full training split for a full-data reference.
    """

    space: SearchSpace
    dataset: DatasetSplits
    train_data: ImageData
    device: torch.device
    seed: int
    setting_prefix: str = "proxy"
    progress: Progress = null_progress
    #: labels learned with a distilled summary (see ``Summary.soft_labels``)
    soft_labels: torch.Tensor | None = None
    label_loss: str = "ce"
    #: the step size a distiller learned with the summary (see ``Summary.learned_lr``)
    learned_lr: float | None = None
    #: a per-step schedule a distiller learned with the summary (see ``Summary.learned_schedule``)
    learned_schedule: StepSchedule | None = None
    #: a network whose softened outputs on every augmented batch a training proxy learns
    #: (label distillation, :mod:`proxynas.teacher`), at KD ``temperature``
    teacher: torch.nn.Module | None = None
    temperature: float = 4.0
    #: the share of the device's free memory this process may fill: 1/N when N worker
    #: processes share one GPU (what ``arch_batch: auto`` sizes its groups to)
    memory_share: float = 1.0


@dataclass(frozen=True)
class Scored:
    """Everything one scoring of an arch yields (see :meth:`Proxy.score_values`).

    ``values`` maps each name of :meth:`Proxy.value_names` to a float, in that
    order (the first is the arch's value); ``curve`` holds one mapping per
    training epoch (``epoch``, ``train_loss``, ``val_loss``, ``val_acc``...)
    for proxies that train (``records_curves``), else nothing.
    """

    values: Mapping[str, float]
    curve: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Proxy(Checked, ABC):
    """Scores an architecture; higher must mean "predicted better"."""

    name: ClassVar[str]
    #: behaviour version, part of every cache key this plugin is in: bump it when a
    #: code change alters what the plugin computes, so cached results recompute
    version: ClassVar[str] = "1"
    #: what the score means, for tables ("test accuracy %", "parameters")
    unit: ClassVar[str] = ""
    #: worth scoring in worker processes (training); cheap lookups are not
    parallel: ClassVar[bool] = False
    #: the final value of an arch depends on the whole population scored with it
    #: (e.g. rank aggregation): ``score`` returns named components and
    #: :meth:`combine` turns the population's components into values
    combines: ClassVar[bool] = False
    #: :meth:`score_values` returns per-epoch learning curves (training proxies); the
    #: pipeline then adds a ``curves_<row>`` table to the proxy's stage
    records_curves: ClassVar[bool] = False

    @abstractmethod
    def score(self, arch: str, ctx: ProxyContext) -> Any:
        """The proxy value of ``arch`` (canonical string of ``ctx.space``).

        A float; for a combining proxy (``combines = True``) a dict of named
        component floats, which only :meth:`combine` turns into values.
        """

    def value_names(self) -> tuple[str, ...]:
        """Names of the values one scoring of an arch yields (:meth:`score_values`), first = the value.

        Empty (the default) for a proxy with one value. A proxy with several
        (e.g. final accuracy and learning-curve sums from one training) is
        one report row per name: ``<row>`` for the first, ``<row>:<name>``
        for the others, all from one cached stage.
        """
        return ()

    def score_values(self, arch: str, ctx: ProxyContext) -> Scored:
        """Every named value of ``arch`` from one scoring (for a proxy with :meth:`value_names`).

        The default wraps :meth:`score` as ``{"value": score}``. A proxy
        overriding it keeps :meth:`score` equal to the first value.
        """
        return Scored({"value": float(self.score(arch, ctx))})

    def archs_per_scoring(self) -> int:
        """How many archs :meth:`score_batch` trains at once (1, the default: one at a time)."""
        return 1

    def batches_in(self, space) -> bool:
        """Whether :meth:`score_batch` can take several archs of ``space`` at once (by default: if it fuses)."""
        return space.fuses

    def fitted_to(self, archs: Sequence[str], ctx: ProxyContext) -> "Proxy":
        """This proxy with the settings that depend on the device resolved for scoring ``archs``.

        The default returns ``self``; a training proxy with ``arch_batch: auto``
        returns a copy whose ``arch_batch`` fits the device
        (:mod:`proxynas.proxies.arch_batch`). Callers scoring a population
        call it once, before cutting the archs into groups.
        """
        return self

    def score_batch(self, archs: Sequence[str], ctx: ProxyContext) -> list[Scored]:
        """:meth:`score_values` of each of ``archs`` (at most :meth:`archs_per_scoring`), in order.

        The default scores them one by one; a proxy that trains several
        networks at once (:class:`~proxynas.proxies.training.TrainProxy`'s
        ``arch_batch``) overrides it, giving each arch what scoring it alone
        gives, up to float rounding.
        """
        return [self.score_values(arch, ctx) for arch in archs]

    def combine(self, raw: Sequence[Any]) -> list[float]:
        """Final values of a population from its ``score`` results (same order).

        The default returns ``raw`` unchanged; combining proxies override it.
        """
        return list(raw)

