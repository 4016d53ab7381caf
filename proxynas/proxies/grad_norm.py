"""grad_norm: the summed per-layer norms of the loss gradient at initialisation.

Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021, Sec. 3
(the "grad_norm" baseline): the Euclidean norm of the gradient of the training
loss, taken layer by layer and summed,

    score = sum_l || dL/dW_l ||_2,

where L is the cross-entropy of the untrained network (train-mode BatchNorm)
on one minibatch and W_l runs over the weights of the convolution and linear
layers, as in their code (``foresight/pruners/measures/grad_norm.py``, summed by
``find_measures``). Summing per-layer norms (rather than taking one global norm)
is what their code does and is what their reported correlations measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.zero_cost_batch import ZeroCostBatch, build_network, loss_backward, weight_layers


@PROXIES.register("grad_norm")
@dataclass(frozen=True)
class GradNormProxy(ZeroCostBatch, Proxy):
    """Sum over conv/linear layers of the L2 norm of dL/dW on one minibatch."""

    unit = "gradient norm"

    def score(self, arch: str, ctx: ProxyContext) -> float:
        net = build_network(arch, ctx)
        loss_backward(net, *self.batch(ctx))
        total = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for layer in weight_layers(net):
            if layer.weight.grad is not None:
                total += torch.linalg.vector_norm(layer.weight.grad.double())
        return float(total.item())
