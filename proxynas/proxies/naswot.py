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

Which units count is the setting ``units``. ``relu`` (default) is the paper's:
ReLU modules only. A network without ReLUs (the 720-ConvNet space's LeakyReLU
and sigmoid networks) then has no code, K_H = 0, and scores ``-inf``: NASWOT
ranks every such network last, tied. ``piecewise_linear`` (a deviation, for
spaces that mix activations) also codes the input of LeakyReLU and PReLU, whose
linear regions -- the object the paper's codes index (Sec. 3) -- are also cut
at 0, so the code means the same; smooth activations (sigmoid, tanh, GELU) have
no linear regions and still score ``-inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from proxynas.fields import checked
from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.zero_cost_batch import ZeroCostBatch, build_network


#: the modules whose inputs are coded, per ``units`` setting: activations with one kink, at 0
UNIT_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "relu": (nn.ReLU,),
    "piecewise_linear": (nn.ReLU, nn.LeakyReLU, nn.PReLU),
}


def hamming_kernel(net: nn.Module, x: torch.Tensor, units: tuple[type[nn.Module], ...] = UNIT_TYPES["relu"]) -> torch.Tensor:
    """``K_H`` (float64, ``[B, B]``) of the binary codes of the inputs of ``net``'s ``units`` modules on ``x``."""
    b = x.shape[0]
    kernel = torch.zeros(b, b, dtype=torch.float64, device=x.device)

    def accumulate(module: nn.Module, inputs: tuple) -> None:
        code = (inputs[0].detach().reshape(b, -1) > 0).float()
        # per-module counts < 2**24 are exact in float32; the running sum is float64
        agree = code @ code.T + (1.0 - code) @ (1.0 - code).T
        kernel.add_(agree.double())

    hooks = [m.register_forward_pre_hook(accumulate) for m in net.modules() if isinstance(m, units)]
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
    """log |K_H| of the Hamming kernel of binary ReLU codes over one minibatch.

    ``units``: ``relu`` (the paper's) or ``piecewise_linear`` (LeakyReLU and
    PReLU too; module doc).
    """

    unit = "log-determinant"

    units: str = checked("relu", choices=tuple(UNIT_TYPES), keyed_when_set=True)

    def score(self, arch: str, ctx: ProxyContext) -> float:
        net = build_network(arch, ctx)
        x, _ = self.batch(ctx)
        return log_abs_det(hamming_kernel(net, x, UNIT_TYPES[self.units]))
