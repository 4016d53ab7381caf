"""NASWOT: how distinguishable a minibatch's ReLU activation patterns are at initialisation.

Mellor et al., "Neural Architecture Search without Training", ICML 2021, Sec. 3.
Each image i of a minibatch gets a binary code c_i with one bit per rectified
unit of the network (1 where the unit's input is positive). With N_A the total
number of units and d_H the Hamming distance, the kernel

    K_H[i, j] = N_A - d_H(c_i, c_j)

counts the units on which two images agree, and the score is (their Eq. 2)

    s = log |K_H|.

Networks that map different images to more different activation patterns get a
better-conditioned K_H and a higher score. As in the authors' code
(BayesWatch/nas-without-training, ``score_networks.py``) the codes are taken
from the input of every ReLU module, the network is untrained and in training
mode, and K_H is accumulated per module as ``c c^T + (1-c)(1-c)^T`` (agreements
on ones plus agreements on zeros). Their code counts only ReLUs reached by a
backward pass; every ReLU of an NB201 network is (the ``none`` op multiplies by
zero and keeps its input in the graph), so all ReLU modules are counted.

Codes of identical images are identical, so a batch with repeated images has a
singular K_H and the score is ``-inf`` (log 0); real minibatches of distinct
images give finite scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.zero_cost_batch import ZeroCostBatch, build_network


def hamming_kernel(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``K_H`` (float64, ``[B, B]``) of the binary ReLU-input codes of ``net`` on ``x``."""
    b = x.shape[0]
    kernel = torch.zeros(b, b, dtype=torch.float64, device=x.device)

    def accumulate(module: nn.Module, inputs: tuple) -> None:
        code = (inputs[0].detach().reshape(b, -1) > 0).float()
        # per-module counts < 2**24 are exact in float32; the running sum is float64
        agree = code @ code.T + (1.0 - code) @ (1.0 - code).T
        kernel.add_(agree.double())

    hooks = [m.register_forward_pre_hook(accumulate) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return kernel


def log_abs_det(kernel: torch.Tensor) -> float:
    """``log |K|`` in float64 (``-inf`` for a singular kernel)."""
    sign, logdet = np.linalg.slogdet(kernel.detach().cpu().numpy().astype(np.float64))
    return float(logdet) if sign != 0 else float("-inf")


@PROXIES.register("naswot")
@dataclass(frozen=True)
class NaswotProxy(ZeroCostBatch, Proxy):
    """log |K_H| of the Hamming kernel of binary ReLU codes over one minibatch."""

    unit = "log-determinant"

    def score(self, arch: str, ctx: ProxyContext) -> float:
        net = build_network(arch, ctx)
        x, _ = self.batch(ctx)
        return log_abs_det(hamming_kernel(net, x))
