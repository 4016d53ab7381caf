"""SynFlow: the data-free synaptic-flow saliency summed over the whole network.

Tanaka et al., "Pruning neural networks without any data by iteratively
conserving synaptic flow", NeurIPS 2020, define the SynFlow objective and
saliency

    R_SF = 1^T ( prod_{l=1}^{L} |theta^[l]| ) 1,      S_SF(theta) = dR_SF/dtheta ⊙ theta,

i.e. R is the output summed over all classes of the network whose parameters
are replaced by their absolute values, evaluated on an all-ones input, and the
saliency of a weight is its product with dR/dtheta. Abdelfattah et al.,
"Zero-Cost Proxies for Lightweight NAS", ICLR 2021 (Sec. 3, Eq. for S_synflow),
score an architecture by the sum of that saliency over all weights:

    score = sum_theta  theta ⊙ dR/dtheta      (all terms >= 0 once theta = |theta|).

Details follow their released code (SamsungLabs/zero-cost-nas,
``foresight/pruners/measures/synflow.py``, measure ``synflow`` with ``bn=False``):

* BatchNorm is removed: the measure runs on a copy of the network built without
  BatchNorm layers, so here every BatchNorm is replaced by an identity. (Kept,
  BN would renormalise every layer's output with batch statistics, and R would
  no longer be the product of |theta| along paths that the equation describes.)
* every parameter is replaced by its absolute value, the network is cast to
  float64 (the product of |theta| over 20+ layers overflows float32), and the
  input is one all-ones image of the dataset's shape;
* the sum runs over the weights of convolution and linear layers (not biases).

The score depends on the architecture, the initialisation (``ctx.seed``) and the
input shape / class count only -- never on the images, so the proxy has no
batch setting. Scores grow multiplicatively with depth and width; only their
order matters for ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.zero_cost_batch import build_network, strip_batchnorm, weight_layers


@PROXIES.register("synflow")
@dataclass(frozen=True)
class SynflowProxy(Proxy):
    """Sum over conv/linear weights of |theta ⊙ dR/dtheta| for R = 1^T f_|theta|(1) (float64, no BN)."""

    unit = "synaptic flow"

    def score(self, arch: str, ctx: ProxyContext) -> float:
        net = strip_batchnorm(build_network(arch, ctx)).double()
        with torch.no_grad():
            for p in net.parameters():
                p.abs_()
        c, h, w = ctx.dataset.shape
        ones = torch.ones(1, c, h, w, dtype=torch.float64, device=ctx.device)
        net.zero_grad(set_to_none=True)
        with torch.enable_grad():
            net(ones).sum().backward()
        total = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for layer in weight_layers(net):
            if layer.weight.grad is not None:
                total += (layer.weight * layer.weight.grad).abs().sum()
        return float(total.item())
