"""TrajEctory matching with Soft Label Assignment (TESLA).

Cui, Wang, Si & Hsieh, "Scaling Up Dataset Distillation to ImageNet-1K with
Constant Memory" (ICML 2023). Same objective as MTT (MTT eq. 1; machinery in
:mod:`proxynas.distill.trajectory`), with two changes:

* **Constant memory** (Sec. 3.2). The student's final parameters are a sum of
  per-step updates, theta_hat_{t+N} = theta*_t - alpha sum_n g_n with
  g_n = grad l(A(b_n); theta_hat_{t+n}), so the gradient of eq. 1 w.r.t. a
  batch b_n only needs theta_hat_{t+n}, b_n and a vector that summarises
  everything downstream of step n. The student is first run forward for N
  steps without any graph, keeping only theta_hat_{t+n} and (indices, DSA
  seed) per step; then the steps are revisited one at a time, each building
  and freeing the graph of a single step. Peak graph memory is that of one
  step whatever N is (the stored parameter vectors are N x P floats, no
  activations).

  The revisit runs backwards (an adjoint / reverse-mode sweep):
  lambda_N = dL/dtheta_hat_{t+N}, and for n = N-1..0

      dL/db_n    = -alpha * d(lambda_{n+1} . g_n)/db_n
      dL/dalpha += -lambda_{n+1} . g_n
      lambda_n   = lambda_{n+1} - alpha * H_n lambda_{n+1}   (H_n lambda: a Hessian-vector product)

  which is exactly MTT's backpropagated gradient, Hessian terms included.
  TESLA's released code keeps lambda_n = lambda_N for every n: it
  differentiates g_n through b_n only, holding theta_hat_{t+n} fixed, which
  drops the products with H_n. ``exact=False`` reproduces that cheaper
  first-order variant; it equals MTT's gradient only for N = 1.
* **Soft labels** (Sec. 3.3): the synthetic images carry logit labels
  assigned by a trained expert (:meth:`TrajectoryMatching.initial_labels`),
  used by the student and returned with the summary (``label_loss="ce"``);
  ``learn_labels`` additionally optimises them through eq. 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from proxynas.distill.base import DISTILLERS
from proxynas.distill.trajectory import Matched, TrajectoryMatching, Unroll, learned, matched
from proxynas.fields import checked


@DISTILLERS.register("tesla")
@dataclass(frozen=True)
class TESLA(TrajectoryMatching):
    """TESLA; defaults as :class:`~proxynas.distill.mtt.MTT` (whose CIFAR settings TESLA reuses) plus soft labels.

    ``soft_labels`` (default true): expert-assigned logit labels (Sec. 3.3).
    ``learn_labels`` (default false, as in the paper, which assigns rather
    than learns them) also descends eq. 1 on them with ``lr_label`` (1.0, our
    choice: it moves logits of size ~1 visibly within tens of iterations).
    ``exact`` (default true): the exact gradient of eq. 1 in constant memory;
    false drops the Hessian-vector products as TESLA's released code does.

    Expert labels are only as sharp as the expert: on 8x8 digits with small
    CPU-sized experts (mean top probability 0.63) a network trained 300
    epochs at lr 0.01 on them reached 73% where the same images with hard
    labels reached 95% (``benchmarks/distill_accuracy.py``); weak experts
    call for ``soft_labels: false`` or longer / faster evaluation training.
    """

    name: ClassVar[str] = "tesla"
    #: 2: the summary carries the learned step size alpha (``Summary.learned_lr``)
    version: ClassVar[str] = "2"

    soft_labels: bool = True
    exact: bool = checked(True)

    def matching_gradients(
        self, unroll: Unroll, syn: torch.Tensor, lr: torch.Tensor, labels: torch.Tensor | None
    ) -> Matched:
        """Sec. 3.2: a graph-free forward pass, then one single-step graph at a time, last step first."""
        alpha = lr.detach()
        steps = len(unroll.steps)
        frozen_labels = None if labels is None else labels.detach()

        # Forward: only theta_hat_{t+n} is kept; each step's graph dies with its gradient.
        thetas = [unroll.start.detach()]
        for n in range(steps):
            theta = thetas[-1].detach().requires_grad_(True)
            loss = unroll.step_loss(theta, syn.detach(), frozen_labels, n)
            (grad,) = torch.autograd.grad(loss, theta)
            with torch.no_grad():
                thetas.append(theta - alpha * grad)

        final = thetas[-1].detach().requires_grad_(True)
        distance = unroll.distance(final)
        (adjoint,) = torch.autograd.grad(distance, final)

        # Backward over the steps: lambda_{n+1} = `adjoint` is dL/dtheta_hat_{t+n+1}.
        wrt = learned(syn, lr, labels)
        wrt.pop(1)  # alpha's gradient is the scalar -lambda . g_n, no autograd needed
        totals = [torch.zeros_like(t) for t in wrt]
        lr_grad = torch.zeros_like(alpha)
        for n in reversed(range(steps)):
            theta = thetas[n].detach().requires_grad_(True)
            loss = unroll.step_loss(theta, syn, labels, n)
            (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
            inner = (grad * adjoint).sum()
            # theta*_t is a constant, so step 0 needs no Hessian-vector product.
            propagate = self.exact and n > 0
            parts = torch.autograd.grad(inner, wrt + [theta] if propagate else wrt)
            for total, part in zip(totals, parts):
                total.sub_(alpha * part)
            lr_grad.sub_(inner.detach())
            if propagate:
                adjoint = adjoint - alpha * parts[-1]
            thetas[n] = None  # the sweep only moves backwards; free as we go
        return matched(distance.item(), [totals[0], lr_grad] + totals[1:])
