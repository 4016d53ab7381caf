"""Dataset Condensation with Contrastive signals (DCC).

Lee, Chun, Jung, Yun & Yoon, "Dataset Condensation with Contrastive Signals"
(ICML 2022). DC matches gradients class by class,
``sum_c D(grad L(S_c), grad L(T_c))``, so the synthetic images of one class
never see the other classes and need not carry what tells classes apart. DCC
matches the gradient of the loss accumulated over *all* classes jointly,

    L_DCC = D( (1/C) sum_c grad_theta L(S_c; theta),  (1/C) sum_c grad_theta L(T_c; theta) ),

so each class's synthetic gradient is matched in the presence of the others'
(the classifier rows of different classes interact through the softmax): the
"contrastive signals" of the title. Everything else, including the network
trajectory trained on the synthetic set, is DC's; with the default ``dsa``
strategy this is the paper's DSAC (DCC on DSA), ``dsa: none`` is its DCC.

Not reproduced: the paper's bi-level warm-up schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn

from proxynas.distill.base import DISTILLERS
from proxynas.distill.dc import DC
from proxynas.distill.gradient_matching import Grads, joint_gradient


@DISTILLERS.register("dcc")
@dataclass(frozen=True)
class DCC(DC):
    """DC/DSA with the class-collaborative matching objective of Lee et al. 2022 (settings: see :class:`DC`)."""

    name: ClassVar[str] = "dcc"

    def objective(self, real: Sequence[Grads], syn: Sequence[Grads]) -> torch.Tensor:
        """L_DCC from per-class gradients: D between the class-averaged real and synthetic gradients."""
        k = len(real)
        real_mean = [torch.stack(per_param).sum(0) / k for per_param in zip(*real)]
        syn_mean = [torch.stack(per_param).sum(0) / k for per_param in zip(*syn)]
        return self.distance(real_mean, syn_mean)

    def matching_loss(
        self, net: nn.Module, real: Sequence[torch.Tensor], syn: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """L_DCC in one backward pass per side: the gradient of the class-averaged loss."""
        real_grads = joint_gradient(net, real, create_graph=False)
        syn_grads = joint_gradient(net, syn, create_graph=True)
        return self.distance(real_grads, syn_grads)
