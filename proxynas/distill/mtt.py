"""Matching Training Trajectories (MTT).

Cazenavette, Wang, Torralba, Efros & Zhu, "Dataset Distillation by Matching
Training Trajectories" (CVPR 2022). Synthetic images are learned so that N
SGD steps on them, from a checkpoint theta*_t of an expert trained on real
data, land near the expert's checkpoint M epochs later (eq. 1, Algorithm 1;
the shared machinery is :mod:`proxynas.distill.trajectory`).

MTT's own part is how eq. 1 is differentiated: by plain backpropagation
through the whole unrolled student, keeping every step's graph (including the
graph of each inner gradient, i.e. second-order terms) alive until the end.
Memory therefore grows linearly with ``syn_steps``; TESLA
(:mod:`proxynas.distill.tesla`) computes the same gradient in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from proxynas.distill.base import DISTILLERS
from proxynas.distill.trajectory import Matched, TrajectoryMatching, Unroll, learned, matched


@DISTILLERS.register("mtt")
@dataclass(frozen=True)
class MTT(TrajectoryMatching):
    """MTT; defaults are the paper's CIFAR-10 IPC 10 row except where noted.

    Paper (Appendix, CIFAR-10 IPC 10): N = ``syn_steps`` 30, M =
    ``expert_epochs`` 2, T+ = ``max_start_epoch`` 20, alpha initialised to
    ``lr_teacher`` 0.01 and learned with ``lr_lr`` 1e-5, all synthetic
    images in every step (``batch_syn=None``), 5000 iterations, real-image
    initialisation, DSA. Experts: 100 ConvNets trained 50 epochs with SGD
    lr 0.01 (no momentum or weight decay) in batches of 256; here
    ``num_experts`` defaults to 10 to keep the preparation affordable.

    ``lr_img`` 1000: the paper's value is for ZCA-whitened CIFAR-10, while
    proxynas feeds per-channel-normalised pixels; the authors' released
    commands keep 1000 on un-whitened data too (MTT's ImageNet subsets,
    TESLA's CIFAR-10 IPC 1), and on normalised 8x8 digits lr_img 100 and
    1000 both lower eq. 1 steadily and give the same accuracy (10000
    does not help). Hard labels by default (``soft_labels=False``), as in
    the paper.
    """

    name: ClassVar[str] = "mtt"
    #: 2: the summary carries the learned step size alpha (``Summary.learned_lr``)
    version: ClassVar[str] = "2"

    def matching_gradients(
        self, unroll: Unroll, syn: torch.Tensor, lr: torch.Tensor, labels: torch.Tensor | None
    ) -> Matched:
        """Algorithm 1's backward pass: autograd through all N unrolled steps at once.

        Each inner gradient is taken with ``create_graph=True`` so that the
        dependence of theta_hat_{t+n+1} on every earlier batch (through
        theta_hat_{t+n} and the Hessian of l) reaches the images.
        """
        theta = unroll.start.detach().requires_grad_(True)
        for n in range(len(unroll.steps)):
            loss = unroll.step_loss(theta, syn, labels, n)
            (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
            theta = theta - lr * grad
        distance = unroll.distance(theta)
        grads = torch.autograd.grad(distance, learned(syn, lr, labels))
        return matched(distance.item(), grads)
