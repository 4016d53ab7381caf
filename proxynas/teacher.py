"""Teacher relabelling (label distillation) for summary-trained proxies.

A teacher network is trained once on the full training split (its own cached
stage); while a candidate architecture trains on a summary, every augmented
view of the summary images is relabelled by the teacher and the candidate
learns the teacher's softened distribution (:func:`~proxynas.training.kd_loss`,
Hinton et al. 2015). This is the relabelling step of FKD (Shen & Xing, ECCV
2022), SRe2L (Yin, Xing & Shen, NeurIPS 2023, Sec. 3.3) and RDED (Sun et al.,
CVPR 2024): the summary supplies the inputs, the teacher supplies labels much
richer than one class per image. Any summary, distilled or a coreset, can be
relabelled: the pipeline adds a ``<method>+teacher`` row per method listed in
``relabel``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Literal, Mapping

import torch
from torch import nn

from proxynas.data.types import DatasetSplits
from proxynas.fields import checked
from proxynas.models import ConvNet
from proxynas.progress import Progress, null_progress
from proxynas.spaces.base import SearchSpace
from proxynas.training import TrainSettings, evaluate, fit

#: the architecture value that means the DC/DM/MTT ConvNet rather than a cell of the space
CONVNET = "convnet"
#: the suffix of a summary's row relabelled by the teacher
RELABELLED = "+teacher"
#: the settings that shape the student's loss, not the teacher (not in the teacher stage's key)
_STUDENT_FIELDS = ("temperature", "relabel")


@dataclass(frozen=True)
class TeacherConfig(TrainSettings):
    """The teacher: its network, how it is trained on the full training split, and what it relabels.

    * ``arch``: ``convnet`` (the ConvNet of DC/DM/MTT with ``width``/``depth``
      and instance norm; default) or an architecture string of the search
      space being ranked (e.g. a strong NB201 cell);
    * the SGD recipe (:class:`~proxynas.training.TrainSettings`), here with
      ``epochs`` 20 and random flips by default: a teacher only has to be
      better than what the summary alone teaches, and is trained once;
    * ``temperature``: the KD temperature T of the student's loss (4, the
      common CIFAR choice of Hinton-style KD, e.g. CRD's benchmark, Tian et
      al., ICLR 2020);
    * ``relabel``: the ``distill.methods`` whose summaries get a
      ``<method>+teacher`` row (empty: no teacher is trained).
    """

    epochs: int = checked(20, ge=1)
    augment: Literal["none", "flip", "dsa"] = "flip"
    arch: str = CONVNET
    width: int = checked(128, ge=1)
    depth: int = checked(3, ge=1)
    temperature: float = checked(4.0, gt=0)
    relabel: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.relabel, str) or len(set(self.relabel)) != len(self.relabel):
            raise ValueError(f"relabel must list distill.methods names, each once, got {self.relabel!r}")

    def network_settings(self) -> dict[str, Any]:
        """The settings the trained teacher depends on (its stage's cache key): all but the student's."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _STUDENT_FIELDS}


def relabelled_row(method: str) -> str:
    """The report row of ``distill.methods`` entry ``method``'s summary relabelled by the teacher (``dm+teacher``)."""
    return f"{method}{RELABELLED}"


def relabelled_graph_name(method: str) -> str:
    """What that row's stage and outputs are named after (``dm-teacher``: stage names take no ``+``)."""
    return f"{method}-teacher"


@dataclass(frozen=True)
class Teacher:
    """A trained teacher (CPU, eval mode), its accuracy on the validation split, and its training seconds."""

    model: nn.Module
    val_acc: float
    seconds: float


def build_network(settings: TeacherConfig, space: SearchSpace | None, dataset: DatasetSplits) -> nn.Module:
    """The untrained teacher network for ``dataset``'s shape (seed the global RNG before calling)."""
    c, h, w = dataset.shape
    if settings.arch == CONVNET:
        return ConvNet(c, dataset.num_classes, (h, w), width=settings.width, depth=settings.depth)
    if space is None:
        raise ValueError(f"teacher.arch={settings.arch!r} is a cell of the search space, which was not given")
    return space.build(settings.arch, in_channels=c, num_classes=dataset.num_classes, image_size=h)


def train_teacher(
    dataset: DatasetSplits,
    params: Mapping[str, Any],
    device: torch.device,
    progress: Progress = null_progress,
) -> dict[str, Any]:
    """Stage function: train the teacher once on the full training split; ``{teacher, teacher_seconds}``."""
    settings = TeacherConfig(**params["settings"])
    start = time.perf_counter()
    # seeded throughout: the weights, and the global RNG random flips draw from
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(params["seed"])
        model = build_network(settings, params.get("space"), dataset)
        fitted = fit(model, dataset.train, settings, device=device, seed=params["seed"], label="teacher",
                     setting_prefix="teacher", progress=progress)
    _, val_acc = evaluate(fitted.model, dataset.val, device=device)
    seconds = time.perf_counter() - start
    model = fitted.model.to("cpu").eval().requires_grad_(False)
    return {"teacher": Teacher(model, val_acc, seconds), "teacher_seconds": seconds}
