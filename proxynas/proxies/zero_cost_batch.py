"""What every zero-cost proxy shares: the minibatch it sees and the untrained network it scores.

Zero-cost proxies (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS",
ICLR 2021, Sec. 3) score a freshly initialised network from a single minibatch
of training data -- one forward and at most one backward pass, no update. Two
things must therefore be pinned down for a score to be reproducible, and they
are defined once here so that every proxy agrees on them:

* the batch: ``batch_size`` images drawn uniformly without replacement from
  ``ctx.train_data`` by a generator seeded with ``ctx.seed`` (all of them when
  there are fewer), so every architecture is scored on the same images;
* the network: built by ``ctx.space`` for the dataset's shape with the CPU RNG
  seeded by ``ctx.seed`` (inside :func:`torch.random.fork_rng`, so the caller's
  RNG stream is untouched), then moved to ``ctx.device`` and left in training
  mode, as the reference code of Abdelfattah et al. does (BatchNorm therefore
  normalises with the statistics of the scored batch). Initialising on the CPU
  makes the weights identical whatever the device.

The per-weight proxies of Abdelfattah et al. (snip, grad_norm, fisher, synflow)
aggregate over the weights of convolution and linear layers only -- not biases,
not BatchNorm affine parameters; :func:`weight_layers` is that set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from proxynas.data.types import ImageData
from proxynas.fields import Checked, checked
from proxynas.proxies.base import ProxyContext

__all__ = [
    "ZeroCostBatch",
    "draw_batch",
    "build_network",
    "weight_layers",
    "loss_backward",
    "strip_batchnorm",
]

#: Layer types whose weights the per-weight proxies sum over.
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class ZeroCostBatch(Checked):
    """The setting every data-dependent zero-cost proxy has: how many images it looks at.

    64 is the minibatch Abdelfattah et al. used on NAS-Bench-201.
    """

    batch_size: int = checked(64, ge=1)

    def batch(self, ctx: ProxyContext) -> tuple[torch.Tensor, torch.Tensor]:
        """This proxy's batch for ``ctx`` (see :func:`draw_batch`)."""
        return draw_batch(ctx.train_data, self.batch_size, ctx.seed, ctx.device)


def draw_batch(
    data: ImageData, batch_size: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``min(batch_size, len(data))`` images and labels, the same for the same ``seed``."""
    n = len(data)
    if n == 0:
        raise ValueError("cannot draw a zero-cost batch from an empty dataset")
    generator = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(n, generator=generator)[: min(batch_size, n)]
    return data.x[index].to(device), data.y[index].to(device)


def build_network(arch: str, ctx: ProxyContext) -> nn.Module:
    """A freshly initialised network for ``arch``, seeded by ``ctx.seed``, on ``ctx.device``, in train mode."""
    c, h, _ = ctx.dataset.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        net = ctx.space.build(arch, in_channels=c, num_classes=ctx.dataset.num_classes, image_size=h)
    return net.to(ctx.device).train()


def weight_layers(net: nn.Module) -> list[nn.Module]:
    """Convolution and linear layers of ``net`` in module order."""
    return [m for m in net.modules() if isinstance(m, WEIGHT_LAYERS)]


def loss_backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Clear gradients, then back-propagate the mean cross-entropy of ``net`` on ``(x, y)``."""
    net.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = F.cross_entropy(net(x), y)
        loss.backward()
    return loss.detach()


def strip_batchnorm(net: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``net`` by an identity, in place; returns ``net``."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())
    return net
