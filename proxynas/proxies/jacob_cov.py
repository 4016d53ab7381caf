"""jacob_cov: how uncorrelated the input Jacobians of a minibatch are at initialisation.

Mellor et al., "Neural Architecture Search without Training", arXiv:2006.04647
v1 (2020), Sec. 3 -- the score of the first version, replaced by NASWOT in the
ICML 2021 version and kept by Abdelfattah et al. (ICLR 2021) as ``jacob_cov``.
For a minibatch x_1..x_N let J_i = d(sum_k f_k(x_i))/dx_i be the flattened
Jacobian of the summed network output with respect to image i, Sigma_J the
N x N correlation matrix of the J_i, and sigma_1..sigma_N its eigenvalues. Then

    score = - sum_i [ log(sigma_i + k) + 1 / (sigma_i + k) ],   k = 1e-5.

The per-eigenvalue term is smallest at sigma = 1 - k, so the score is highest
when the Jacobians are uncorrelated (Sigma_J close to the identity): a network
whose local linear maps differ between inputs can tell those inputs apart.
As in the reference code (``foresight/pruners/measures/jacob_cov.py``) the
network is untrained and in training mode, and one backward pass of
``sum(f(x))`` gives all J_i at once.

A network whose output ignores its input (an NB201 cell whose output is cut off
by ``none`` edges) has zero Jacobians, whose correlations are undefined (the
reference code returns NaN). Such a network cannot tell any inputs apart, so it
is given the score of perfectly correlated Jacobians (eigenvalues N, 0, ..., 0),
the lowest the formula yields for a rank-one correlation matrix; ranking
metrics then place it at the bottom instead of failing on NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.zero_cost_batch import ZeroCostBatch, build_network

#: the constant k of the score (Mellor et al. 2020 v1; 1e-5 in their and Abdelfattah et al.'s code)
EPS = 1e-5


def eigen_score(eigenvalues: np.ndarray, k: float = EPS) -> float:
    """``-sum(log(v + k) + 1/(v + k))`` of the correlation eigenvalues ``v``."""
    v = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)  # clip round-off below 0
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def jacobian_correlation_score(jacobians: torch.Tensor, k: float = EPS) -> float:
    """The jacob_cov score of per-sample Jacobians ``[N, ...]``."""
    j = jacobians.detach().reshape(jacobians.shape[0], -1).double().cpu().numpy()
    n = j.shape[0]
    centred = j - j.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    if n < 2 or not np.all(norms > 0.0) or not np.all(np.isfinite(centred)):
        # undefined correlation: score it as fully correlated
        return eigen_score(np.array([float(n)] + [0.0] * (n - 1)), k)
    corr = (centred / norms[:, None]) @ (centred / norms[:, None]).T
    return eigen_score(np.linalg.eigvalsh(corr), k)


def input_jacobians(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d(sum_k f_k(x_i))/dx_i for every sample, from one backward pass."""
    x = x.detach().clone().requires_grad_(True)
    net.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = net(x)
        (grad,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out))
    return grad.detach()


@PROXIES.register("jacob_cov")
@dataclass(frozen=True)
class JacobCovProxy(ZeroCostBatch, Proxy):
    """-sum(log(sigma + k) + 1/(sigma + k)) over eigenvalues of the input-Jacobian correlation."""

    unit = "score"

    def score(self, arch: str, ctx: ProxyContext) -> float:
        net = build_network(arch, ctx)
        x, _ = self.batch(ctx)
        return jacobian_correlation_score(input_jacobians(net, x))
