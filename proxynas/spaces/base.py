"""The search-space plug-in interface.

A search space answers three questions for the rest of the pipeline: which
architectures exist (``enumerate``/``sample``), what a user-written arch string
means (``validate``/``encode``/``decode``), and what network it denotes
(``build``). Ranking architectures by cheap training, as benchmarked by
NAS-Bench-201 (Dong & Yang, ICLR 2020), needs nothing more from a space.

Subclasses are frozen dataclasses whose fields are the user's settings, so two
spaces with equal settings are equal and hashable (usable as cache keys).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch

from proxynas.registry import Registry

SEARCH_SPACES: Registry[type["SearchSpace"]] = Registry("search space")


@dataclass(frozen=True)
class SearchSpace(ABC):
    """A finite set of architectures, each named by a canonical string."""

    name: ClassVar[str]

    @abstractmethod
    def validate(self, arch: str) -> str:
        """The canonical string of ``arch``; ArchError (one line) if it is not in the space."""

    @abstractmethod
    def sample(self, n: int, seed: int) -> list[str]:
        """``n`` distinct canonical archs drawn uniformly, the same for the same seed."""

    @abstractmethod
    def enumerate(self) -> Iterator[str]:
        """Every arch of the space (after its filters), in a fixed order."""

    @abstractmethod
    def size(self) -> int:
        """How many archs ``enumerate`` yields."""

    @abstractmethod
    def encode(self, arch: str) -> tuple[int, ...]:
        """A fixed-length integer code of ``arch`` (e.g. for predictors)."""

    @abstractmethod
    def decode(self, code: tuple[int, ...]) -> str:
        """The canonical string of a code made by :meth:`encode`."""

    @abstractmethod
    def cardinalities(self) -> tuple[int, ...]:
        """Number of choices at each position of a code (for Optuna distributions)."""

    @abstractmethod
    def build(self, arch: str, *, in_channels: int, num_classes: int, image_size: int) -> torch.nn.Module:
        """A freshly initialised network for ``arch`` whose forward returns logits."""

    def num_params(self, arch: str, *, in_channels: int, num_classes: int, image_size: int) -> int:
        """Trainable parameters of the built network.

        Counted on the module itself rather than by formula so that it can never
        drift from what is actually trained; BatchNorm running statistics are
        buffers, not parameters, matching how NAS-Bench-201 reports params.
        """
        net = self.build(arch, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        return sum(p.numel() for p in net.parameters() if p.requires_grad)
