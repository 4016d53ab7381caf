"""Dataset Condensation (DC) and its siamese-augmented version DSA.

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching" (ICLR
2021): synthetic images are learned by matching, class by class, the gradient
of the training loss on the synthetic images with the gradient on real images
(eq. 9), with the layer-wise cosine distance of eq. 10, along the trajectory of
a network trained on the synthetic set (Algorithm 1).

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation"
(ICML 2021; "DSA"): both batches of a class go through the same sampled
differentiable augmentation A(., omega_c) before their gradients are matched
(eq. 6), and the network is trained on augmented synthetic images.

One registered method, ``dc``: the ``dsa`` setting defaults to the DSA
strategy (so the default *is* DSA); ``dsa: none`` is plain DC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from proxynas.distill.base import DISTILLERS
from proxynas.distill.gradient_matching import GradientMatching, dc_loops, epoch_batches
from proxynas.fields import checked


@DISTILLERS.register("dc")
@dataclass(frozen=True)
class DC(GradientMatching):
    """DC (``dsa="none"``) / DSA (default); defaults follow the papers except ``iterations``.

    Paper settings: K = 1000 iterations (here 200 by default), lr_img 0.1 with
    momentum 0.5, lr_net 0.01 (plain SGD), 256 real images per class, a
    ConvNet of width 128 and depth 3, and per-ipc loops (:func:`dc_loops`):
    ``match_steps`` (DC's "outer_loop") and ``net_epochs`` (DC's
    "inner_loop": epochs of SGD on the synthetic set in mini-batches of
    ``batch_train``) are taken from that table when left ``None``.
    See :class:`GradientMatching` for the shared settings.
    """

    name: ClassVar[str] = "dc"

    net_epochs: int | None = checked(None, gt=0)
    batch_train: int = checked(256, gt=0)

    def default_match_steps(self, ipc: int) -> int:
        """DC's outer_loop for ``ipc`` (:func:`dc_loops`)."""
        return dc_loops(ipc)[0]

    def epochs_for(self, ipc: int) -> int:
        """DC's inner_loop for ``ipc`` unless ``net_epochs`` is set."""
        return self.net_epochs if self.net_epochs is not None else dc_loops(ipc)[1]

    def update_network(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        syn_x: torch.Tensor,
        syn_y: torch.Tensor,
        real_x: torch.Tensor,
        real_y: torch.Tensor,
        ipc: int,
        generator: torch.Generator,
        iteration: int,
    ) -> None:
        """DC Algorithm 1, theta_{t+1} = opt-alg_theta(L(S), ...): ``net_epochs`` epochs of SGD on S.

        With DSA each synthetic image is augmented with its own omega, as the
        DSA paper trains networks on synthetic data.
        """
        batches = epoch_batches(len(syn_x), self.batch_train, self.epochs_for(ipc), generator)
        self.sgd_steps(net, optimizer, syn_x, syn_y, batches, generator, iteration)
