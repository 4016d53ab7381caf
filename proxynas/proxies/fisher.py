"""Fisher: the diagonal-Fisher estimate of the loss increase from removing each channel.

Theis et al., "Faster gaze prediction with dense networks and Fisher pruning",
2018 (the Fisher pruning signal of their Sec. 2; used for NAS by Turner et
al., "BlockSwap: Fisher-guided Block Substitution for Network Compression on a
Budget", ICLR 2020): for an activation a (output of a convolution, channel k,
spatial positions i, sample n) the estimated loss increase from removing
channel k is

    Delta_k = 1/(2N) * sum_n ( sum_i a_nki * dL/da_nki )^2.

Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021
(Sec. 3, S_fisher) sum Delta_k over all channels of all convolution and linear
layers, with L the cross-entropy of the untrained network (train-mode
BatchNorm) on one minibatch; a is the layer's output before BatchNorm.

Their code (``foresight/pruners/measures/fisher.py`` with
``p_utils.reshape_elements``) broadcasts each channel's Delta_k to every weight
of that output channel before the final sum, so a channel counts
``C_in/groups * k_h * k_w`` times (``in_features`` for a linear layer). The
correlations they report measure that sum, so it is the default
(``per_weight=True``); ``per_weight=False`` sums each channel once, the plain
formula above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from proxynas.fields import checked
from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.zero_cost_batch import ZeroCostBatch, build_network, loss_backward, weight_layers


@PROXIES.register("fisher")
@dataclass(frozen=True)
class FisherProxy(ZeroCostBatch, Proxy):
    """Sum over conv/linear output channels of 0.5 * mean_n (sum_i a ⊙ dL/da)^2."""

    unit = "fisher information"

    #: weight each channel by the number of weights feeding it, as the reference code does
    per_weight: bool = checked(True)

    def score(self, arch: str, ctx: ProxyContext) -> float:
        net = build_network(arch, ctx)
        outputs: list[tuple[nn.Module, torch.Tensor]] = []

        def keep_output(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            if out.requires_grad:
                out.retain_grad()
                outputs.append((module, out))

        hooks = [layer.register_forward_hook(keep_output) for layer in weight_layers(net)]
        try:
            loss_backward(net, *self.batch(ctx))
        finally:
            for h in hooks:
                h.remove()

        total = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for layer, out in outputs:
            if out.grad is None:
                continue
            prod = (out.detach() * out.grad).double()
            per_channel = prod.sum(dim=tuple(range(2, prod.ndim))) if prod.ndim > 2 else prod  # [N, K]
            delta = per_channel.pow(2).mean(0).mul(0.5).sum()
            if self.per_weight:
                delta = delta * layer.weight[0].numel()
            total += delta
        return float(total.item())
