"""The search-space plug-in interface.

A search space answers three questions for the rest of the pipeline: which
architectures exist (``enumerate``/``sample``), what a user-written arch string
means (``validate``/``encode``/``decode``), and what network it denotes
(``build``). Ranking architectures by cheap training, as benchmarked by
NAS-Bench-201 (Dong & Yang, ICLR 2020), needs nothing more from a space.

Subclasses are frozen dataclasses whose fields are the user's settings, so two
spaces with equal settings are equal and hashable (usable as cache keys).
Spaces whose archs are one choice per position derive most of this from
:class:`proxynas.spaces.product.ProductSpace`. A new space is one module in
this package: ``proxynas.spaces`` imports every module it finds, so its
``@SEARCH_SPACES.register`` runs; :mod:`proxynas.testing.spaces` is its test suite.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterator, Protocol, Sequence

import torch

from proxynas.models.fused import NotFusable
from proxynas.registry import Registry

SEARCH_SPACES: Registry[type["SearchSpace"]] = Registry("search space")


class FeatureNetwork(Protocol):
    """What a built network exposes besides logits, for proxies that read its features.

    After NASLib's ``forward_before_global_avg_pool``: proxies such as AZ-NAS
    (:mod:`proxynas.proxies.az_nas`) ask the network for its feature maps
    instead of knowing each network class.
    """

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """F_0..F_L, each ``[B, C_l, H_l, W_l]``: the first block's input, then every block's output."""

    def forward_before_global_avg_pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``[B, C, H, W]``, the one the head pools (or flattens) into logits."""


@dataclass(frozen=True)
class SearchSpace(ABC):
    """A finite set of architectures, each named by a canonical string."""

    name: ClassVar[str]
    #: behaviour version, part of every cache key this plugin is in: bump it when a
    #: code change alters what the plugin computes, so cached results recompute
    version: ClassVar[str] = "1"

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
        """A freshly initialised network for ``arch`` whose forward returns logits.

        The network also implements :class:`FeatureNetwork` (the contract suite checks it).
        """

    def build_for_training(self, arch: str, *, in_channels: int, num_classes: int, image_size: int) -> torch.nn.Module:
        """:meth:`build`, for a network that will only be trained and evaluated (the training proxy's).

        A space may return one that skips computation that cannot change its
        logits (NB201: edges into unused nodes and ``none`` edges); it must
        train exactly as :meth:`build`'s (the contract suite checks it).
        Zero-cost proxies use :meth:`build`: they read every layer.
        """
        return self.build(arch, in_channels=in_channels, num_classes=num_classes, image_size=image_size)

    #: :meth:`fuse` can train several of this space's networks as one
    fuses: ClassVar[bool] = False
    #: one-by-one training runs this space's networks channels-last (NHWC) when the
    #: proxy's ``channels_last`` is on: set where ``benchmarks/memory_layout.py``
    #: shows it faster, since it is not for every network (on one CPU thread a
    #: 720-ConvNet step takes 1.34x the time channels-last at 32x32, NB201's 0.64x)
    trains_channels_last: ClassVar[bool] = False

    def fuse(self, networks: Sequence[torch.nn.Module]) -> torch.nn.Module:
        """One module training ``networks`` (built by :meth:`build`) side by side.

        Its forward maps a batch to ``[B, n, classes]`` logits (network k in
        column k) and its ``write_back()`` copies the trained weights into
        ``networks``; see :mod:`proxynas.models.fused`. Spaces whose networks
        cannot be fused (``fuses = False``) raise NotFusable.
        """
        raise NotFusable(f"the {self.name} space cannot fuse networks")

    def num_params(self, arch: str, *, in_channels: int, num_classes: int, image_size: int) -> int:
        """Trainable parameters of the built network.

        Counted on the module itself rather than by formula so that it can never
        drift from what is actually trained; BatchNorm running statistics are
        buffers, not parameters, matching how NAS-Bench-201 reports params.
        """
        net = self.build(arch, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        return sum(p.numel() for p in net.parameters() if p.requires_grad)
