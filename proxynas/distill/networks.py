"""Matching networks: the randomly initialised networks a distiller matches through.

DM, DC and their relatives learn a summary by matching what *random networks*
see of the real and the synthetic images (embeddings for DM, gradients for
DC). The papers always draw those networks from one architecture, the
ConvNet-3 of :mod:`proxynas.models.convnet`; summaries tuned to one
architecture transfer poorly to others (DC-Bench, Cui et al., NeurIPS 2022),
which matters here because the summary is used to rank *other* architectures.
So a distiller may instead draw, at every iteration, a fresh random cell of
the search space being ranked (``networks: space``, a deliberate deviation
from the papers), built as candidates are built, with their batch norm.

:func:`draw_network` draws one network; :func:`freeze_batchnorm` is the
batch-norm handling of DC's and DM's released code
(github.com/VICO-UoE/DatasetCondensation) for matching through BN networks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import torch
from torch import nn

from proxynas.data.types import ImageData
from proxynas.distill.base import seeded_convnet
from proxynas.errors import ConfigError

if TYPE_CHECKING:  # only for annotations; spaces import models, not distillers
    from proxynas.spaces.base import SearchSpace

__all__ = [
    "BN_PER_CLASS",
    "NETWORKS",
    "MatchingNetwork",
    "draw_network",
    "freeze_batchnorm",
    "has_batchnorm",
    "require_space",
]

#: where a distiller's matching networks come from: the fixed ConvNet of the
#: papers, or random cells of the search space being ranked
NETWORKS = ("convnet", "space")

#: real images per class in the batch that fixes BN statistics (DC's released ``BNSizePC``)
BN_PER_CLASS = 16


class MatchingNetwork(NamedTuple):
    """One drawn network: the module, its arch (``None`` for the ConvNet), and its embedding.

    ``embed`` maps images ``[N, C, H, W]`` to features ``[N, D]``: the ConvNet's
    flattened features (:meth:`ConvNet.embed`, DM's psi_theta) or, for a
    space's network, the global average pool of
    ``forward_before_global_avg_pool`` (the features its classifier reads).
    """

    module: nn.Module
    arch: str | None
    embed: Callable[[torch.Tensor], torch.Tensor]


def draw_network(
    train: ImageData,
    seed: int,
    device: torch.device,
    *,
    space: "SearchSpace | None" = None,
    width: int = 128,
    depth: int = 3,
) -> MatchingNetwork:
    """A randomly initialised matching network for ``train``'s shape, fixed by ``seed``.

    Without ``space``: the ConvNet of ``width``/``depth`` (:func:`seeded_convnet`,
    as the papers). With ``space``: the arch ``space.sample(1, seed=seed)[0]``
    built by ``space.build`` for ``train``'s channels, classes and height
    (``width``/``depth`` are then unused). Weights are initialised on the CPU
    inside a forked RNG seeded with ``seed`` (same seed -> same network on
    every device; the caller's global RNG is untouched) and then moved to
    ``device``. Parameters do not require grad (callers that train the
    network turn it on). The module is in train mode, so batch norm
    normalises with batch statistics, as candidates train.

    A cell whose output never sees its input (all paths through ``none``;
    only drawn from spaces that keep such cells, e.g. NB201 with
    ``skip_disconnected: false``) embeds every image identically: the
    iteration that draws it carries no signal (zero gradient on the images)
    but is kept, so what is drawn depends only on the seed.
    """
    if space is None:
        net = seeded_convnet(train, seed, device, width=width, depth=depth)
        return MatchingNetwork(net, None, net.embed)
    arch = space.sample(1, seed=seed)[0]
    c, h, _ = train.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = space.build(arch, in_channels=c, num_classes=train.num_classes, image_size=h)
    net.requires_grad_(False)
    net = net.to(device).train()

    def embed(x: torch.Tensor) -> torch.Tensor:
        return net.forward_before_global_avg_pool(x).mean(dim=(2, 3))

    return MatchingNetwork(net, arch, embed)


def require_space(method: str, networks: str, space: "SearchSpace | None") -> None:
    """Raise a one-line :class:`ConfigError` when ``networks: space`` is set but no space was given."""
    if networks == "space" and space is None:
        raise ConfigError(
            f"distill.methods.{method}.networks=space needs the search space being ranked;"
            f" call distill(..., space=...) or set distill.methods.{method}.networks=convnet"
        )


def _batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def has_batchnorm(net: nn.Module) -> bool:
    """Whether ``net`` has any batch-norm layer (the papers' ConvNet uses instance norm: it has none)."""
    return bool(_batchnorms(net))


@torch.no_grad()
def freeze_batchnorm(net: nn.Module, images: torch.Tensor) -> None:
    """Fix every BN layer's mean/var to those of ``images`` and put the BN layers in eval mode.

    DC's released code (github.com/VICO-UoE/DatasetCondensation, for BN
    models) forwards a real batch mixing all classes in train mode before
    each matching step and then puts the BN layers in eval mode, so the
    per-class batches whose gradients are matched are all normalised by the
    same, all-class statistics instead of each by its own class's. Here the
    running statistics are *reset* to that batch's (the released code blends
    them into the running averages with BN's default momentum 0.1, which on a
    fresh network leaves them mostly at their initial 0/1). The rest of the
    network keeps its mode; call ``net.train()`` before training it again.
    """
    layers = _batchnorms(net)
    if not layers:
        return
    net.train()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over one batch: exactly its statistics
    try:
        net(images)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
    for m in layers:
        m.eval()
