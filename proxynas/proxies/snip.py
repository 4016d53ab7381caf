"""SNIP: connection sensitivity summed over the whole network.

Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
Sensitivity", ICLR 2019, Sec. 4.1: the connection sensitivity of weight j is
the magnitude of the loss derivative with respect to a multiplicative mask c_j
at c = 1,

    |g_j| = |dL(c ⊙ w; D)/dc_j| = |w_j * dL/dw_j|

(SNIP then divides by sum_k |g_k|; summed over a network that normalised form
is always 1, so the NAS score keeps the unnormalised |g_j|).

Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021 (Sec. 3,
S_snip), turn the per-weight saliency into an architecture score by summing it:

    score = sum_j |theta_j ⊙ dL/dtheta_j|,

with L the cross-entropy of the untrained network (train-mode BatchNorm) on one
minibatch, the sum running over the weights of convolution and linear layers
as in their code (``foresight/pruners/measures/snip.py``). The mask derivative
equals ``weight * weight.grad``, so no mask parameters are needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.zero_cost_batch import ZeroCostBatch, build_network, loss_backward, weight_layers


@PROXIES.register("snip")
@dataclass(frozen=True)
class SnipProxy(ZeroCostBatch, Proxy):
    """Sum over conv/linear weights of |theta ⊙ dL/dtheta| on one minibatch."""

    unit = "saliency"

    def score(self, arch: str, ctx: ProxyContext) -> float:
        net = build_network(arch, ctx)
        loss_backward(net, *self.batch(ctx))
        total = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for layer in weight_layers(net):
            if layer.weight.grad is not None:
                total += (layer.weight.detach() * layer.weight.grad).abs().sum(dtype=torch.float64)
        return float(total.item())
