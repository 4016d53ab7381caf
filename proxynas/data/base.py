"""Where datasets come from, and the splitting/normalising every source shares.

A :class:`DatasetSource` is a frozen dataclass whose fields are the user's
``data.*`` settings; ``load()`` turns them into seeded train/val/test
:class:`~proxynas.data.types.DatasetSplits`. Sources only know how to *read*
images; the helpers here make every source split and normalise the same way, so
that a ranking measured on one dataset is comparable with one on another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from proxynas.data.types import DatasetSplits, ImageData
from proxynas.errors import DataError
from proxynas.fields import Checked, checked
from proxynas.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetSource",
    "stratified_split",
    "channel_stats",
    "normalize",
    "make_splits",
    "check_classes",
]


@dataclass(frozen=True)
class DatasetSource(Checked, ABC):
    """A named way to load a labelled image dataset as seeded splits.

    ``val_fraction`` of the training images (per class) become the validation
    split, which the pipeline uses to pick hyper-parameters without peeking at
    test; ``seed`` fixes which images those are, so reruns compare like with like.
    """

    name: ClassVar[str]
    #: behaviour version, part of every cache key this plugin is in: bump it when a
    #: code change alters what the plugin computes, so cached results recompute
    version: ClassVar[str] = "1"

    val_fraction: float = checked(0.1, gt=0, lt=1)
    seed: int = 0

    @abstractmethod
    def load(self) -> DatasetSplits:
        """Read the dataset and return normalised train/val/test splits."""


DATASETS: Registry[type[DatasetSource]] = Registry("dataset")


def stratified_split(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split ``(x, y)`` into ``(kept, held_out)`` with ``fraction`` of each class held out.

    Splitting per class (rather than over the whole set) keeps the class balance
    of both parts equal to the original and guarantees every class with at least
    two images appears on both sides, so a small validation split can still score
    every class. Each class holds out ``round(fraction * n_class)`` images, clipped
    to ``[1, n_class - 1]``. The same ``seed`` always selects the same images; the
    two parts keep the original order of the images.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    gen = torch.Generator().manual_seed(int(seed))
    held: list[torch.Tensor] = []
    for k in torch.unique(y).tolist():
        members = torch.nonzero(y == k).flatten()
        n = len(members)
        if n < 2:
            continue  # a lone image cannot be on both sides; it stays in `kept`
        n_held = min(max(round(fraction * n), 1), n - 1)
        held.append(members[torch.randperm(n, generator=gen)[:n_held]])
    mask = torch.zeros(len(y), dtype=torch.bool)
    if held:
        mask[torch.cat(held)] = True
    return (x[~mask], y[~mask]), (x[mask], y[mask])


def _as_unit_float(x: torch.Tensor) -> torch.Tensor:
    """Pixels as float32 in ``[0, 1]`` (uint8 images are divided by 255)."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32, copy=True)  # a copy: callers normalise it in place


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images ``[N, C, H, W]`` in ``[0, 1]`` units.

    uint8 images are summarised through a 256-bin histogram per channel, which
    is exact and several times faster than float arithmetic over 50k CIFAR
    images; float images are accumulated in float64 chunk by chunk (a float32
    running sum drifts, and converting everything at once would need gigabytes).
    A channel with zero spread gets std 1, so normalising it is a harmless shift
    instead of a division by zero.
    """
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"need non-empty images [N, C, H, W], got shape {tuple(x.shape)}")
    c = x.shape[1]
    count = x.numel() // c
    if x.dtype == torch.uint8:
        per_channel = x.transpose(0, 1).reshape(c, -1)
        hist = torch.stack([torch.bincount(per_channel[i], minlength=256) for i in range(c)]).to(torch.float64)
        values = torch.arange(256, dtype=torch.float64) / 255.0
        total = hist @ values
        total_sq = hist @ (values * values)
    else:
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for start in range(0, len(x), chunk):
            part = x[start : start + chunk].to(torch.float64)
            total += part.sum(dim=(0, 2, 3))
            total_sq += (part * part).sum(dim=(0, 2, 3))
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` as float32 (uint8 input) or ``(x - mean) / std`` (float in [0, 1])."""
    out = _as_unit_float(x)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return out.sub_(m).div_(s)


def make_splits(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: Sequence[str],
    info: dict | None = None,
) -> DatasetSplits:
    """Normalise three ``(x, y)`` pairs with the *train* split's statistics.

    Statistics come from train only so that nothing about the validation or
    test images leaks into the inputs the proxies and networks see; ``x`` may be
    uint8 (0..255) or float in ``[0, 1]``.
    """
    mean, std = channel_stats(train[0])
    classes = tuple(classes)

    def build(pair: tuple[torch.Tensor, torch.Tensor]) -> ImageData:
        x, y = pair
        return ImageData(normalize(x, mean, std), y.to(torch.int64), classes, mean, std)

    return DatasetSplits(name, build(train), build(val), build(test), dict(info or {}))


def check_classes(
    y: torch.Tensor,
    classes: Sequence[str],
    split_name: str,
    *,
    where: str = "the dataset",
    fix: str = "every class needs images in train/ and test/",
) -> None:
    """Raise :class:`DataError` if some class has no image in this split.

    A class absent from a split silently breaks per-class distillation and
    makes accuracies incomparable across datasets, so it is reported up front,
    naming the class, the split and where the data came from.
    """
    present = set(torch.unique(y).tolist()) if len(y) else set()
    for k, cls in enumerate(classes):
        if k not in present:
            raise DataError(f"class {cls!r} has no images in the {split_name} split of {where}; {fix}")
