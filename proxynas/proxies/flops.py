"""FLOPs: multiply-accumulate operations of one forward pass, the naive complexity baseline.

Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021, compare
their proxies with FLOPs and parameter count, which alone rank NAS-Bench-201
architectures well. FLOPs here means multiply-accumulates (MACs) per image at
the dataset's input size, counted by forward hooks on the layers that do
matrix work:

* convolution (1-, 2- or 3-d): ``C_out * H_out * W_out * (C_in / groups) * k_h * k_w``
  (for 2-d), i.e. output elements times the weights feeding each one;
* linear: output elements times ``in_features``.

Bias additions, BatchNorm, activations, pooling, element-wise sums and the
``none`` op (a multiplication by zero) are not counted: they are O(activations)
rather than O(activations x fan-in) and NB201 cells differ only in which
convolutions they contain. The network is run in eval mode on one all-zero
image, so the count is independent of data and initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.zero_cost_batch import build_network

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_macs(layer: nn.Module, out: torch.Tensor) -> int:
    """MACs per sample of a conv/linear ``layer`` that produced ``out`` (batch first)."""
    per_sample = out[0].numel()
    if isinstance(layer, _CONVS):
        return per_sample * layer.weight[0].numel()  # weight[0]: (C_in/groups) * kernel
    if isinstance(layer, nn.Linear):
        return per_sample * layer.in_features
    return 0


def count_macs(net: nn.Module, input_shape: Sequence[int], device: torch.device | str | None = None) -> int:
    """MACs of ``net`` on one input of shape ``input_shape`` (no batch dim).

    Convolution and linear layers only (see the module docstring). The module
    is run in eval mode and restored to its previous mode afterwards.
    """
    param = next(net.parameters(), None)
    if device is None:
        device = param.device if param is not None else "cpu"
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    total = 0

    def count(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, out)

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, _CONVS + (nn.Linear,))]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, *input_shape, dtype=dtype, device=device))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return int(total)


@PROXIES.register("flops")
@dataclass(frozen=True)
class FlopsProxy(Proxy):
    """Multiply-accumulates of conv and linear layers per image at the dataset's size."""

    unit = "MACs"

    def score(self, arch: str, ctx: ProxyContext) -> float:
        net = build_network(arch, ctx)
        return float(count_macs(net, ctx.dataset.shape, device=ctx.device))
