"""Horizontal fusion: n networks of the same layout run as one, each layer once for all n.

Training a small network on a tiny summary leaves the device idle: each layer
is a kernel launch (or, on a CPU, an operator dispatch) doing little work,
so the per-operator overhead dominates. Stacking n networks' weights and
running each layer once for all of them -- a grouped convolution whose
groups are the networks, a BatchNorm over all their channels -- divides that
overhead by n (HFTA, Wang et al., "Horizontally Fused Training Array",
MLSys 2021, Sec. 3, fuses the models of a hyper-parameter sweep the same way).

Activations of fused modules are *channel-stacked*: ``[B, n * C, H, W]``,
network k owning channels ``k*C .. (k+1)*C - 1``. Every op a fused module
applies is per channel (convolution with ``groups = n``, BatchNorm, ReLU,
pooling, identity), so network k's channels are computed exactly as network
k alone would compute them -- same weights, same batch statistics -- and its
gradients are its own. SGD with momentum and weight decay is elementwise, so
one optimizer over the fused parameters updates each network as its own
optimizer would.

:func:`fuse_modules` fuses modules of one class leaf by leaf: Conv2d,
BatchNorm2d and Linear are stacked; a leaf without parameters or buffers
(ReLU, pooling, identity, NB201's zero op) must act per channel and is
shared; a container (Sequential, or any module whose ``forward`` only
composes its children and per-channel tensor ops, e.g. a residual block) is
copied with fused children. :meth:`Fused.write_back` copies trained weights
back into the source modules.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class NotFusable(TypeError):
    """The modules differ in class or layout, or hold a layer fusion does not know."""


class Fused:
    """Mixin of a fused leaf: knows its source modules and can write trained weights back to them."""

    sources: tuple[nn.Module, ...]

    def write_back(self) -> None:
        raise NotImplementedError


def _same(modules: Sequence[nn.Module], *attrs: str) -> None:
    first = modules[0]
    for attr in attrs:
        values = {repr(getattr(m, attr)) for m in modules}
        if len(values) > 1:
            raise NotFusable(f"{type(first).__name__}.{attr} differs between the networks: {sorted(values)}")


class FusedConv2d(nn.Conv2d, Fused):
    """n Conv2d of one shape as one grouped convolution over channel-stacked input.

    With ``shared_input`` every network reads the same ``[B, C_in, H, W]``
    input (a stem): the weights are stacked along the output channels and
    the groups stay the sources' own.
    """

    def __init__(self, convs: Sequence[nn.Conv2d], *, shared_input: bool = False) -> None:
        _same(convs, "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
              "groups", "padding_mode")
        if {c.bias is None for c in convs} != {convs[0].bias is None}:
            raise NotFusable("Conv2d: some networks have a bias and some not")
        first, n = convs[0], len(convs)
        super().__init__(
            first.in_channels if shared_input else n * first.in_channels,
            n * first.out_channels,
            first.kernel_size,
            stride=first.stride,
            padding=first.padding,
            dilation=first.dilation,
            groups=first.groups if shared_input else n * first.groups,
            bias=first.bias is not None,
            padding_mode=first.padding_mode,
            device=first.weight.device,
            dtype=first.weight.dtype,
        )
        self.sources = tuple(convs)
        with torch.no_grad():
            self.weight.copy_(torch.cat([c.weight for c in convs]))
            if self.bias is not None:
                self.bias.copy_(torch.cat([c.bias for c in convs]))

    def write_back(self) -> None:
        with torch.no_grad():
            for conv, w in zip(self.sources, self.weight.chunk(len(self.sources))):
                conv.weight.copy_(w)
            if self.bias is not None:
                for conv, b in zip(self.sources, self.bias.chunk(len(self.sources))):
                    conv.bias.copy_(b)


class FusedBatchNorm2d(nn.BatchNorm2d, Fused):
    """n BatchNorm2d as one over all their channels: statistics are per channel, so per network."""

    def __init__(self, norms: Sequence[nn.BatchNorm2d]) -> None:
        _same(norms, "num_features", "eps", "momentum", "affine", "track_running_stats")
        first = norms[0]
        super().__init__(
            len(norms) * first.num_features,
            eps=first.eps,
            momentum=first.momentum,
            affine=first.affine,
            track_running_stats=first.track_running_stats,
            device=first.running_mean.device if first.running_mean is not None else None,
        )
        self.sources = tuple(norms)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(self, name) is not None:
                    getattr(self, name).copy_(torch.cat([getattr(m, name) for m in norms]))
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.copy_(first.num_batches_tracked)

    def write_back(self) -> None:
        n = len(self.sources)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                fused = getattr(self, name)
                if fused is not None:
                    for m, part in zip(self.sources, fused.chunk(n)):
                        getattr(m, name).copy_(part)
            if self.num_batches_tracked is not None:
                for m in self.sources:
                    m.num_batches_tracked.copy_(self.num_batches_tracked)


class FusedLinear(nn.Module, Fused):
    """n Linear heads: ``[B, n * D]`` (network-major) to ``[B, n, out]``, one batched matmul."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        _same(linears, "in_features", "out_features")
        if {m.bias is None for m in linears} != {linears[0].bias is None}:
            raise NotFusable("Linear: some networks have a bias and some not")
        self.sources = tuple(linears)
        self.count, self.in_features = len(linears), linears[0].in_features
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]).clone())
        self.bias = (
            nn.Parameter(torch.stack([m.bias.detach() for m in linears]).clone())
            if linears[0].bias is not None
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.bmm(x.view(len(x), self.count, self.in_features).transpose(0, 1), self.weight.transpose(1, 2))
        out = out.transpose(0, 1)  # [B, n, out]
        return out if self.bias is None else out + self.bias

    def write_back(self) -> None:
        with torch.no_grad():
            for k, m in enumerate(self.sources):
                m.weight.copy_(self.weight[k])
                if self.bias is not None:
                    m.bias.copy_(self.bias[k])


def _is_stateless(module: nn.Module) -> bool:
    return not module._parameters and not module._buffers and not module._modules


def fuse_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """One module computing every one of ``modules`` side by side on channel-stacked input (module doc).

    NotFusable if the modules differ in class, children or layer shapes, or
    hold a layer with parameters other than Conv2d / BatchNorm2d / Linear.
    """
    if not modules:
        raise ValueError("fuse_modules needs at least one module")
    first = modules[0]
    if any(type(m) is not type(first) for m in modules):
        raise NotFusable(f"cannot fuse {sorted({type(m).__name__ for m in modules})}: classes differ")
    if isinstance(first, nn.Conv2d):
        return FusedConv2d(modules)
    if isinstance(first, nn.BatchNorm2d):
        return FusedBatchNorm2d(modules)
    if isinstance(first, nn.Linear):
        return FusedLinear(modules)
    if _is_stateless(first):
        return first
    if first._parameters or first._buffers:
        raise NotFusable(f"{type(first).__name__} holds parameters that fusion does not know how to stack")
    names = list(first._modules)
    if any(list(m._modules) != names for m in modules):
        raise NotFusable(f"{type(first).__name__}: the networks' children differ")
    fused = copy.copy(first)
    fused._modules = {name: fuse_modules([m._modules[name] for m in modules]) for name in names}
    return fused


def write_back(module: nn.Module) -> None:
    """Copy the trained weights of every fused leaf in ``module`` back into its source modules."""
    for sub in module.modules():
        if isinstance(sub, Fused):
            sub.write_back()


def channel_index(networks: Sequence[int], channels: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices of the channel-stacked channels that belong to ``networks`` (in that order)."""
    return torch.cat([torch.arange(k * channels, (k + 1) * channels) for k in networks]).to(device)


def per_network_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[n]`` mean cross-entropies of fused logits ``[B, n, classes]`` against one target for all.

    ``target`` is ``[B]`` class indices or ``[B, classes]`` probabilities.
    """
    n = logits.shape[1]
    if target.dim() == 1:
        expanded = target[:, None].expand(-1, n)
    else:
        expanded = target[:, :, None].expand(-1, -1, n)
    return F.cross_entropy(logits.transpose(1, 2), expanded, reduction="none").mean(0)
