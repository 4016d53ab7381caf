"""What every distiller is: ``train set + ipc -> a small labelled summary``.

A distiller (coreset selector or synthetic-set optimiser) is a frozen dataclass
whose fields are its user settings, registered in :data:`DISTILLERS`. The
helpers here are the checks and bookkeeping all of them share, so each method
module holds only its own paper's algorithm.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch

from proxynas.data.types import ImageData
from proxynas.distill.checkpoint import Checkpoint
from proxynas.errors import ConfigError, DataError, DivergenceError
from proxynas.fields import Checked, checked
from proxynas.models import ConvNet
from proxynas.progress import Progress, null_progress
from proxynas.registry import Registry

DISTILLERS: Registry[type["Distiller"]] = Registry("distiller")
LABEL_LOSSES = ("ce", "mse")


@dataclass(frozen=True)
class StepSchedule:
    """A per-step learning-rate schedule learned with a summary (DD's step sizes, Wang et al. 2018, Alg. 1).

    Step ``t`` trains on step batch ``t mod S`` -- images ``s*m .. s*m+m-1``
    of every class of the summary (classes in order), ``m`` =
    ``images_per_step``, ``S = ipc / m`` -- by one plain SGD step at
    ``step_sizes[t]``; a network replays all ``len(step_sizes)`` steps. A
    training proxy with ``lr_from_summary`` replays it (:func:`proxynas.training.fit`).
    """

    step_sizes: tuple[float, ...]
    images_per_step: int

    def __post_init__(self) -> None:
        if not self.step_sizes or not all(math.isfinite(v) for v in self.step_sizes):
            raise ValueError(f"step_sizes must be a non-empty tuple of finite numbers, got {self.step_sizes!r}")
        if isinstance(self.images_per_step, bool) or not isinstance(self.images_per_step, int) or self.images_per_step <= 0:
            raise ValueError(f"images_per_step must be an integer > 0, got {self.images_per_step!r}")

    def batch_indices(self, num_classes: int, per_class: int) -> list[torch.Tensor]:
        """The ``S`` step batches as indices into a summary of ``num_classes`` x ``per_class`` images (classes in order)."""
        if per_class % self.images_per_step:
            raise ValueError(f"images_per_step {self.images_per_step} does not divide {per_class} images per class")
        m = self.images_per_step
        return [
            torch.cat([torch.arange(k * per_class + s, k * per_class + s + m) for k in range(num_classes)])
            for s in range(0, per_class, m)
        ]


@dataclass(frozen=True)
class Summary:
    """A distilled set: ``ipc`` images per class, classes in order, on the CPU.

    ``history`` is the method's objective per logged iteration (empty for
    coresets, which optimise nothing iteratively).

    ``soft_labels`` (``[N, K]`` float32, CPU) are labels learned with the
    images (label distillation, e.g. KIP, FRePo, TESLA); ``data.y`` still holds
    each image's class, so consumers that only know hard labels keep working.
    ``label_loss`` says how a network trains on them: ``"mse"`` regresses its
    outputs onto them (kernel-ridge targets), ``"ce"`` is cross-entropy with
    ``softmax(soft_labels)`` as the target distribution (logit labels).

    ``learned_lr`` is a step size the distiller learned with the images
    (MTT/TESLA's alpha); a proxy with ``lr_from_summary`` trains with it.

    ``learned_schedule`` is a per-step schedule learned with the images (DD's
    step sizes, :class:`StepSchedule`); a proxy with ``lr_from_summary``
    replays it.

    ``stored_numbers`` is what a factorised summary (IDC, LinBa, HaBa, KFS)
    actually stores -- its bases, codes, decoders -- while ``data`` holds the
    images it expands to, so proxies train on it unchanged; ``None`` for a
    summary that stores its images. :attr:`storage` is the storage budget
    reported beside ``ipc``.
    """

    data: ImageData
    method: str
    history: tuple[float, ...] = ()
    soft_labels: torch.Tensor | None = None
    label_loss: str = "ce"
    learned_lr: float | None = None
    stored_numbers: int | None = None
    learned_schedule: StepSchedule | None = None

    def __post_init__(self) -> None:
        if self.label_loss not in LABEL_LOSSES:
            raise ValueError(f"label_loss must be one of {', '.join(LABEL_LOSSES)}, got {self.label_loss!r}")
        if self.learned_lr is not None and not (math.isfinite(self.learned_lr) and self.learned_lr > 0):
            raise ValueError(f"learned_lr must be a finite number > 0, got {self.learned_lr!r}")
        labels = self.soft_labels
        if labels is not None:
            n, k = len(self.data), self.data.num_classes
            if tuple(labels.shape) != (n, k):
                raise ValueError(f"soft_labels must be [{n}, {k}], got shape {tuple(labels.shape)}")
        if self.learned_schedule is not None:
            per_class, rest = divmod(len(self.data), max(self.data.num_classes, 1))
            if rest or per_class % self.learned_schedule.images_per_step:
                raise ValueError(
                    f"learned_schedule's images_per_step {self.learned_schedule.images_per_step} must divide the"
                    f" summary's {len(self.data)} images into equal class shares"
                )
        if self.stored_numbers is not None and (
            isinstance(self.stored_numbers, bool) or not isinstance(self.stored_numbers, int) or self.stored_numbers <= 0
        ):
            raise ValueError(f"stored_numbers must be an integer > 0, got {self.stored_numbers!r}")

    @property
    def storage(self) -> int:
        """Numbers the summary stores: its images and learned labels, or a factorised summary's factors.

        Hard labels are not counted (they are implied by the class order), as
        in the factorisation papers' budgets.
        """
        if self.stored_numbers is not None:
            return self.stored_numbers
        labels = 0 if self.soft_labels is None else self.soft_labels.numel()
        steps = 0 if self.learned_schedule is None else len(self.learned_schedule.step_sizes)
        return self.data.x.numel() + labels + steps


#: how a paper's evaluation network learns from a summary's labels
EVALUATION_LABELS = ("hard", "learned")


@dataclass(frozen=True)
class EvaluationProtocol:
    """How a paper trains and tests its evaluation network on a summary (its published numbers' protocol).

    ``benchmarks/distill_accuracy.py`` evaluates each method with its own
    :attr:`Distiller.paper_protocol`, so its accuracy is comparable with the
    published one. The default is DC's released ``evaluate_synset`` (Zhao et
    al., ICLR 2021): ConvNet-3 (width 128, instance norm), SGD lr 0.01,
    momentum 0.9, weight decay 5e-4, batch 256, lr x0.1 half way, DSA
    augmentation; ``epochs`` 300 as in the DC paper.
    """

    epochs: int = 300
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    #: factor applied to the learning rate at each of ``lr_decay_at`` (1.0: constant)
    lr_decay: float = 0.1
    #: fractions of ``epochs`` after which the learning rate is multiplied by ``lr_decay``
    lr_decay_at: tuple[float, ...] = (0.5,)
    batch: int = 256
    #: "none", "dsa" (DSA's differentiable augmentations, one draw per image) or "dsa+cutmix"
    augment: str = "dsa"
    #: "hard": class labels; "learned": the summary's soft labels when it has them
    labels: str = "hard"
    #: "ce" or "mse" (FRePo/KIP train on MSE)
    loss: str = "ce"
    #: train at the summary's learned step size (MTT/TESLA's alpha) instead of ``lr``
    learned_lr: bool = False
    #: images and summaries ZCA-whitened (fit on the training split) before training
    zca: bool = False
    #: the source of these values (paper table/section or released-code file)
    source: str = "DC released code, utils.evaluate_synset (Zhao et al. ICLR 2021)"

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.augment not in ("none", "dsa", "dsa+cutmix"):
            raise ValueError(f"augment must be none, dsa or dsa+cutmix, got {self.augment!r}")
        if self.labels not in EVALUATION_LABELS:
            raise ValueError(f"labels must be one of {', '.join(EVALUATION_LABELS)}, got {self.labels!r}")
        if self.loss not in LABEL_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LABEL_LOSSES)}, got {self.loss!r}")
        if any(not 0 < f < 1 for f in self.lr_decay_at) or list(self.lr_decay_at) != sorted(self.lr_decay_at):
            raise ValueError(f"lr_decay_at must be increasing fractions in (0, 1), got {self.lr_decay_at!r}")

    def decay_epochs(self) -> list[int]:
        """The epochs (0-based) at whose start the learning rate is multiplied by ``lr_decay``."""
        return [int(f * self.epochs) for f in self.lr_decay_at]


def preset_name(dataset: str, ipc: int) -> str:
    """The key of a paper preset: ``"cifar10-ipc10"``."""
    return f"{dataset}-ipc{ipc}"


@dataclass(frozen=True)
class Distiller(Checked, ABC):
    """A dataset-distillation or coreset method; fields are its settings."""

    name: ClassVar[str]
    #: behaviour version, part of every cache key this plugin is in: bump it when a
    #: code change alters what the plugin computes, so cached results recompute
    version: ClassVar[str] = "1"
    # True when the method optimises an objective over iterations (it then
    # fills Summary.history and DistillerContract checks it decreases).
    iterative: ClassVar[bool]
    #: the paper's settings per dataset and ipc (keys from :func:`preset_name`,
    #: values the fields that differ from the defaults); see :meth:`paper`
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: how the paper evaluates its summaries (``benchmarks/distill_accuracy.py``)
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol()
    #: a preset whose paper evaluation differs from :attr:`paper_protocol` (MTT's un-whitened IPC 50)
    preset_protocols: ClassVar[Mapping[str, EvaluationProtocol]] = {}

    @classmethod
    def paper(cls, dataset: str, ipc: int, **overrides: Any) -> "Distiller":
        """The method with its paper's settings for ``dataset`` at ``ipc`` (and ``overrides``).

        In a pipeline file the same is ``{name: dm, preset: cifar10-ipc10}``.
        """
        return cls.from_preset(preset_name(dataset, ipc), **overrides)

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "Distiller":
        """The method with the settings of preset ``preset``, then ``overrides``; one-line error if unknown."""
        if preset not in cls.presets:
            known = ", ".join(sorted(cls.presets)) or "none"
            raise ConfigError(f"{cls.name} has no preset {preset!r} (presets: {known}); name one of those or drop preset")
        return cls(**{**cls.presets[preset], **overrides})

    def evaluation_protocol(self, preset: str | None = None) -> EvaluationProtocol:
        """How the paper evaluated summaries made with these settings (from ``preset``, when given).

        :attr:`preset_protocols` ``[preset]`` when it has one, else
        :attr:`paper_protocol`. A method whose paper evaluates its variants
        differently (CAFE vs CAFE+DSA) overrides it.
        """
        cls = type(self)
        return cls.preset_protocols.get(preset, cls.paper_protocol) if preset else cls.paper_protocol

    def images_per_class(self, ipc: int) -> int:
        """How many images per class the summary holds for a storage budget of ``ipc`` images per class.

        ``ipc`` for a factorised method (IDC, LinBa, HaBa, KFS) is the papers'
        storage budget; the summary expands to more images than that.
        """
        return ipc

    @property
    def seeded(self) -> bool:
        """Whether the output depends on ``seed`` (False e.g. for herding on raw pixels)."""
        return True

    @property
    def needs_space(self) -> bool:
        """True when distill() must be given the search space being ranked (keyword ``space=``).

        False by default; methods whose matching networks can be drawn from the
        search space (:mod:`proxynas.distill.networks`) return True when so set.
        """
        return False

    @abstractmethod
    def distill(
        self,
        train: ImageData,
        ipc: int,
        *,
        seed: int,
        device: torch.device,
        progress: Progress = null_progress,
        checkpoint: Checkpoint | None = None,
    ) -> Summary:
        """Summarise ``train`` into :meth:`images_per_class` images per class (``ipc`` for most methods).

        Work happens on ``device``; the returned summary lives on the CPU with
        labels sorted class by class (``[0]*ipc + [1]*ipc + ...``).

        An iterative method saves its loop state into ``checkpoint`` when it
        is due and resumes from the state it holds, ending bit-identical (on
        a CPU) to an uninterrupted run; the others accept and ignore it.
        """


@dataclass(frozen=True)
class PreparedDistiller(Distiller):
    """A distiller with an expensive preparation reusable across runs (MTT's expert trajectories).

    The pipeline runs :meth:`prepare` as its own cached stage, keyed only by
    the fields named in ``prepare_fields`` (and the seed), so changing e.g. the
    number of synthetic steps re-distills without retraining the experts.
    Called directly, :meth:`distill` does both steps.
    """

    #: the settings :meth:`prepare` depends on (its stage's cache key)
    prepare_fields: ClassVar[tuple[str, ...]]
    #: values for settings :meth:`prepare` ignores that satisfy any check
    #: relating them to ``prepare_fields`` (see :meth:`for_prepare`)
    prepare_placeholders: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def for_prepare(cls, settings: Mapping[str, Any]) -> "PreparedDistiller":
        """An instance from ``prepare_params()`` alone, for the preparation stage.

        The other settings are not known there (they are not in its cache key);
        defaults could fail a cross-check the real settings passed (MTT's start
        epoch against the experts' epochs), so ``prepare_placeholders`` fill them.
        """
        return cls(**{**cls.prepare_placeholders, **settings})

    @abstractmethod
    def prepare(
        self, train: ImageData, *, seed: int, device: torch.device, progress: Progress = null_progress
    ) -> Any:
        """The reusable part (picklable, tensors on the CPU)."""

    @abstractmethod
    def distill_prepared(
        self,
        train: ImageData,
        ipc: int,
        prepared: Any,
        *,
        seed: int,
        device: torch.device,
        progress: Progress = null_progress,
        checkpoint: Checkpoint | None = None,
    ) -> Summary:
        """:meth:`Distiller.distill` given the output of :meth:`prepare` (``checkpoint``: its loop's)."""

    def prepare_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.prepare_fields}

    def distill(
        self,
        train: ImageData,
        ipc: int,
        *,
        seed: int,
        device: torch.device,
        progress: Progress = null_progress,
        checkpoint: Checkpoint | None = None,
    ) -> Summary:
        """:meth:`prepare`, then :meth:`distill_prepared`; only the latter is checkpointed."""
        prepared = self.prepare(train, seed=seed, device=device, progress=progress)
        return self.distill_prepared(
            train, ipc, prepared, seed=seed, device=device, progress=progress, checkpoint=checkpoint
        )


def check_ipc(train: ImageData, ipc: int) -> list[int]:
    """Raise unless every class of ``train`` has at least ``ipc`` images; return per-class counts."""
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc <= 0:
        raise ConfigError(f"distill.ipc must be an integer > 0, got {ipc!r}")
    counts = torch.bincount(train.y.cpu(), minlength=train.num_classes).tolist()
    for name, count in zip(train.classes, counts):
        if count == 0:
            raise DataError(f"class {name!r} has no training images; check the dataset")
        if count < ipc:
            raise DataError(f"class {name!r} has {count} images but ipc={ipc} needs {ipc}; lower distill.ipc")
    return counts


def check_finite(value: float, *, method: str, iteration: int, setting: str) -> float:
    """Raise :class:`DivergenceError` naming the method, iteration and the setting to lower."""
    if not math.isfinite(value):
        raise DivergenceError(f"{method}: objective became {value} at iteration {iteration}; lower {setting}")
    return value


def descend(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    history: list[float],
    *,
    method: str,
    iteration: int,
    iterations: int,
    setting: str,
    progress: Progress,
    log_every: int,
) -> float:
    """One outer step of an iterative distiller: check the objective, step, record, report."""
    value = check_finite(loss.item(), method=method, iteration=iteration, setting=setting)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    history.append(value)
    if iteration % log_every == 0 or iteration == iterations:
        progress(iteration, iterations, loss=value)
    return value


def class_indices(train: ImageData) -> list[torch.Tensor]:
    """Indices (CPU, int64) of each class's images, class 0 first."""
    y = train.y.cpu()
    return [torch.nonzero(y == k).flatten() for k in range(train.num_classes)]


def make_summary(
    train: ImageData, per_class: Sequence[torch.Tensor], method: str, history: Sequence[float] = ()
) -> Summary:
    """Stack per-class images (class order) into a CPU :class:`Summary` with sorted labels."""
    x = torch.cat([images.detach().to("cpu", torch.float32) for images in per_class])
    y = torch.cat([torch.full((len(images),), k, dtype=torch.int64) for k, images in enumerate(per_class)])
    data = ImageData(x.contiguous(), y, train.classes, train.mean, train.std)
    return Summary(data=data, method=method, history=tuple(float(v) for v in history))


def seeded_convnet(train: ImageData, seed: int, device: torch.device, **settings) -> ConvNet:
    """A randomly initialised ConvNet for ``train``'s shape, with weights fixed by ``seed``.

    Initialised on the CPU inside a forked RNG so the weights are the same on
    every device and the caller's global RNG state is left untouched.
    """
    c, h, w = train.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConvNet(c, train.num_classes, (h, w), **settings)
    net.requires_grad_(False)
    return net.to(device)


FEATURE_SPACES = ("convnet", "pixels")


@dataclass(frozen=True)
class FeatureCoreset(Distiller):
    """A coreset chosen per class in a feature space (DC-Bench, Cui et al. 2022).

    ``features="convnet"`` embeds with a randomly initialised ConvNet (seeded by
    the run seed), as DC-Bench does for its herding / k-center baselines;
    ``"pixels"`` uses the flattened normalised images. Images are embedded in
    chunks of ``feature_batch`` so large training sets fit in memory.
    """

    iterative: ClassVar[bool] = False

    features: str = checked("convnet", choices=FEATURE_SPACES)
    feature_batch: int = checked(512, gt=0)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)

    @abstractmethod
    def select(self, feats: torch.Tensor, ipc: int, generator: torch.Generator) -> torch.Tensor:
        """Indices (CPU int64, length ``ipc``, distinct) of the chosen rows of one class's ``feats``."""

    def features_of(self, train: ImageData, *, seed: int, device: torch.device) -> torch.Tensor:
        """``[N, D]`` features of every image of ``train`` on ``device`` (DC-Bench, Cui et al. 2022)."""
        if self.features == "pixels":
            return train.x.to(device, torch.float32).flatten(1)
        net = seeded_convnet(train, seed, device, width=self.width, depth=self.depth).eval()
        with torch.no_grad():
            chunks = [
                net.embed(train.x[i : i + self.feature_batch].to(device, torch.float32))
                for i in range(0, len(train), self.feature_batch)
            ]
        return torch.cat(chunks)

    def distill(
        self,
        train: ImageData,
        ipc: int,
        *,
        seed: int,
        device: torch.device,
        progress: Progress = null_progress,
        checkpoint: Checkpoint | None = None,
    ) -> Summary:
        """Run :meth:`select` on each class's features and keep the chosen real images.

        Not iterative: ``checkpoint`` is ignored.
        """
        check_ipc(train, ipc)
        feats = self.features_of(train, seed=seed, device=device)
        generator = torch.Generator().manual_seed(seed)
        per_class = []
        indices = class_indices(train)
        for k, idx in enumerate(indices):
            chosen = idx[self.select(feats[idx.to(device)], ipc, generator).cpu()]
            per_class.append(train.x[chosen.to(train.x.device)])
            progress(k + 1, len(indices))
        return make_summary(train, per_class, self.name)


#: how a synthetic set starts: real images of each class, or noise
INITS = ("real", "noise")


def initial_images(
    train: ImageData, ipc: int, init: str, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Synthetic images at step 0, classes in order: random real images of each class, or N(0, 1) noise.

    Noise is standard normal because the images are normalised per channel.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    if init == "noise":
        c, h, w = train.shape
        return torch.randn(train.num_classes * ipc, c, h, w, generator=generator).to(device)
    picks = [idx[torch.randperm(len(idx), generator=generator)[:ipc]] for idx in class_indices(train)]
    return train.x[torch.cat(picks).to(train.x.device)].to(device, torch.float32)


def finish_summary(
    train: ImageData,
    syn: torch.Tensor,
    ipc: int,
    method: str,
    history: Sequence[float],
    labels: torch.Tensor | None = None,
) -> Summary:
    """The CPU summary of ``syn`` (classes in order), carrying ``labels`` as MSE targets when learned."""
    summary = make_summary(train, syn.detach().split(ipc), method, history)
    if labels is None:
        return summary
    soft = labels.detach().to("cpu", torch.float32).contiguous()
    return Summary(data=summary.data, method=method, history=summary.history, soft_labels=soft, label_loss="mse")

