"""Factorised summaries: stored factors that expand into the images proxies train on.

LinBa (Deng & Russakovsky, NeurIPS 2022), HaBa (Liu et al., NeurIPS 2022)
and KFS (Lee, Lee & Hwang, arXiv 2022) store a summary as *factors* -- shared
bases and per-image coefficients, bases and small hallucinator networks,
latent codes and decoders -- and generate from them more images than the
same numbers would hold as pixels. Their papers compare methods at equal
storage: ``ipc`` is the storage budget, ``ipc`` images per class of the
dataset's shape (:func:`storage_budget`), and the summary expands to
:meth:`~proxynas.distill.base.Distiller.images_per_class` images per class.

Everything downstream sees only the expansion: :func:`factorized_summary`
puts the expanded images in ``Summary.data`` (so proxies train on them
unchanged) and the count of stored numbers in ``Summary.stored_numbers``
(reported as ``Summary.storage`` beside ``ipc``).

* :class:`Factorization` -- a torch module whose parameters are exactly what
  the summary stores, with :meth:`Factorization.expand` to images;
* :class:`FactorizedDistiller` -- a distiller that learns one, and builds it
  for any data shape without data (:meth:`FactorizedDistiller.factorization`),
  so a storage budget can be checked before anything is trained;
* :func:`units_for_budget` -- how many per-class units (coefficient vectors,
  latent codes) fit a budget beside the shared factors, the rule LinBa's
  released code sizes its summaries by.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Callable, Sequence, TypeVar

import torch
from torch import nn

from proxynas.data.types import ImageData
from proxynas.distill.base import Distiller, Summary, check_finite, make_summary
from proxynas.errors import ConfigError

__all__ = [
    "FactorizedDistiller",
    "Factorization",
    "Shape",
    "check_budget",
    "factorized_summary",
    "seeded_build",
    "storage_budget",
    "units_for_budget",
]

#: ``(channels, height, width)`` of one image
Shape = tuple[int, int, int]
FactorizationT = TypeVar("FactorizationT", bound="Factorization")


class Factorization(nn.Module, ABC):
    """The stored factors of a summary: its parameters are exactly the numbers it stores.

    ``expand()`` generates the ``num_classes * per_class`` images, classes in
    order (``per_class`` images of class 0 first), differentiably in the
    factors. Anything a subclass needs that is not stored (image shape,
    counts) is a plain attribute, never a parameter or buffer, so
    :meth:`stored_numbers` is simply the parameters' total size.
    """

    def __init__(self, num_classes: int, per_class: int, image_shape: Shape) -> None:
        super().__init__()
        if num_classes <= 0 or per_class <= 0:
            raise ValueError(f"need at least one class and one image per class, got {num_classes} x {per_class}")
        self.num_classes = int(num_classes)
        self.per_class = int(per_class)
        self.image_shape = tuple(int(s) for s in image_shape)

    @abstractmethod
    def expand(self) -> torch.Tensor:
        """All ``[num_classes * per_class, C, H, W]`` images, classes in order."""

    def labels(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The class of every expanded image (``[0]*per_class + [1]*per_class + ...``)."""
        return torch.arange(self.num_classes, device=device).repeat_interleave(self.per_class)

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """The stored factors by name (the live parameters: a checkpoint's learned tensors)."""
        return dict(self.named_parameters())

    def stored_numbers(self) -> int:
        """How many numbers the summary stores: the total size of :meth:`stored_tensors`."""
        return sum(p.numel() for p in self.parameters())


def seeded_build(build: Callable[[], FactorizationT], seed: int) -> FactorizationT:
    """``build()`` with torch's global RNG seeded by ``seed`` inside a fork, left as it was after.

    Layers initialise from the global RNG; forking it makes a factorization a
    function of ``seed`` alone (the same on every device) without disturbing
    the caller's draws.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def storage_budget(shape: Shape, num_classes: int, ipc: int) -> int:
    """Numbers in ``ipc`` images per class of ``shape``: the storage the factorisation papers compare at."""
    c, h, w = shape
    return ipc * num_classes * c * h * w


def units_for_budget(shape: Shape, num_classes: int, ipc: int, *, shared: int, per_unit: int) -> int:
    """Per-class units of ``per_unit`` numbers that fit ``ipc``'s budget beside ``shared`` numbers (may be <= 0).

    ``floor((budget - shared) / (num_classes * per_unit))``: the rule of
    LinBa's released ``utils/Img_per_Cls_budget.py`` (``cal_ncoef``), where a
    unit is one image's coefficient vector and ``shared`` the bases.
    """
    spare = storage_budget(shape, num_classes, ipc) - shared
    return math.floor(spare / (num_classes * per_unit))


def check_budget(method: str, factorization: Factorization, ipc: int, *, settings: str) -> None:
    """Raise :class:`ConfigError` when ``factorization`` stores more than ``ipc`` images per class would."""
    stored = factorization.stored_numbers()
    budget = storage_budget(factorization.image_shape, factorization.num_classes, ipc)
    if stored > budget:
        c, h, w = factorization.image_shape
        raise ConfigError(
            f"{method}: the summary would store {stored} numbers but ipc={ipc} allows {budget} "
            f"({factorization.num_classes} classes of {c}x{h}x{w} images); lower {settings} or raise ipc"
        )


@dataclass(frozen=True)
class FactorizedDistiller(Distiller):
    """A distiller whose summary is a :class:`Factorization`; ``ipc`` is its storage budget.

    Subclasses say what they store for a data shape and budget
    (:meth:`factorization`) and how many images that expands to
    (:meth:`images_per_class`).
    """

    @abstractmethod
    def factorization(self, shape: Shape, num_classes: int, ipc: int, *, seed: int = 0) -> Factorization:
        """The untrained factors stored for ``num_classes`` classes of ``shape`` images at budget ``ipc`` (CPU).

        Initialised from ``seed`` alone (:func:`seeded_build`); a method that
        starts from real images overwrites them in ``distill``.
        """

    @abstractmethod
    def images_per_class(self, ipc: int) -> int:
        """Images per class the factors expand to (more than ``ipc``, the budget)."""


def factorized_summary(
    train: ImageData,
    factorization: Factorization,
    method: str,
    history: Sequence[float],
    *,
    learned_lr: float | None = None,
    setting: str,
) -> Summary:
    """The CPU summary of ``factorization``: its expanded images, and its stored numbers as the storage.

    Raises :class:`~proxynas.errors.DivergenceError` naming ``setting`` when
    the expansion is not finite (a last step can overflow although its loss
    was finite).
    """
    with torch.no_grad():
        images = factorization.expand()
    if not torch.isfinite(images).all():
        check_finite(float("nan"), method=method, iteration=len(history), setting=setting)
    summary = make_summary(train, images.split(factorization.per_class), method, history)
    return replace(summary, stored_numbers=factorization.stored_numbers(), learned_lr=learned_lr)
