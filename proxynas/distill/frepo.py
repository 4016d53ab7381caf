"""Neural Feature Regression with Pooling (FRePo).

Zhou, Nezhadarya & Ba, "Dataset Distillation using Neural Feature Regression"
(NeurIPS 2022). The distilled set S = (X_s, Y_s) is learned with a kernel
ridge regression loss in the feature space of a network drawn from a model
pool (eq. 2-3 of the paper; the KRR loss of eq. 5 of the survey by Sachdeva
& McAuley 2023):

    K^theta_{XtXs} = f_theta(X_t) f_theta(X_s)^T
    L(S) = 1/2 || Y_t - K^theta_{XtXs} (K^theta_{XsXs} + lambda I)^{-1} Y_s ||^2

where f_theta is the last hidden layer of the network and lambda is scaled by
``tr(K_ss) / n_s``. The meta-gradient flows through the kernel and the
feature extractor only, never through the network's training (1-step TBPTT,
section 3.1). After each meta step the sampled network takes one online
training step on S, and a network that has taken ``max_online_steps`` steps
is re-initialised (the model pool of section 3.2, Algorithm 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from proxynas.data.types import ImageData
from proxynas.distill.base import (
    DISTILLERS,
    INITS,
    Distiller,
    Summary,
    check_finite,
    check_ipc,
    finish_summary,
    initial_images,
    seeded_convnet,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.distill.krr import krr_loss, regression_targets
from proxynas.fields import checked
from proxynas.models import ConvNet
from proxynas.numerics import draw_seed, sample_batch
from proxynas.progress import Progress, null_progress

SETTING = "distill.methods.frepo.lr_img"  # what to lower when the objective diverges


class _PoolMember:
    """One network of the pool with its online optimiser and online step count."""

    def __init__(self, frepo: "FRePo", train: ImageData, seed: int, device: torch.device, steps: int) -> None:
        self.net: ConvNet = seeded_convnet(train, seed, device, width=frepo.width, depth=frepo.depth)
        self.net.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=frepo.online_lr)
        self.steps = steps

    def state(self) -> dict:
        """The member's weights, online optimiser state and step count (for a checkpoint)."""
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load(self, state: dict) -> None:
        """Put :meth:`state` back into this member (same architecture; weights copied in place)."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


@DISTILLERS.register("frepo")
@dataclass(frozen=True)
class FRePo(Distiller):
    """FRePo with a ConvNet pool.

    Defaults: ``pool_size``/``max_online_steps``/``reg`` = 10 / 100 / 1e-6
    (our reading of the paper; the released code was not available to
    check), ``iterations`` and learning rates sized for short CPU runs.

    The pool holds ``pool_size`` seeded ConvNets (``width``/``depth``); each
    iteration samples one uniformly, computes the KRR loss of
    ``batch_target`` random real images against the synthetic set in its
    feature space, takes one Adam step (lr ``lr_img``) on the images and,
    with ``learn_labels``, on the labels (initialised to centred one-hot;
    the paper learns them, the default here keeps the hard labels every
    consumer of a Summary trains on), then trains the network one Adam step
    (lr ``online_lr``) on S with the MSE to the labels. Networks are reset
    after ``max_online_steps`` steps; their step counts start staggered
    (``j * max_online_steps / pool_size``) so resets are spread over time.
    ``reg`` is lambda before the trace scaling (paper: 1e-6).
    ``Summary.history`` holds the loss of every iteration. A checkpoint
    holds the images and labels, Adam's state, every pool network's weights,
    online optimiser state and step count, the generator's state and the
    history.
    """

    name: ClassVar[str] = "frepo"
    iterative: ClassVar[bool] = True

    iterations: int = checked(200, gt=0)
    pool_size: int = checked(10, gt=0)
    max_online_steps: int = checked(100, gt=0)
    online_lr: float = checked(0.001, gt=0)
    lr_img: float = checked(0.01, gt=0)
    learn_labels: bool = checked(False)
    reg: float = checked(1e-6, ge=0)
    batch_target: int = checked(512, gt=0)
    init: str = checked("real", choices=INITS)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    log_every: int = checked(10, gt=0)

    def objective(
        self, net: ConvNet, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, y_t: torch.Tensor
    ) -> torch.Tensor:
        """FRePo eq. 3: KRR loss with the kernel ``f(X_t) f(X_s)^T`` of ``net``'s last hidden layer.

        Target features are constants (no graph); ``y`` are ``[n, K]``.
        """
        with torch.no_grad():
            feat_t = net.embed(x_t)
        feat_s = net.embed(x_s)
        k_ss = feat_s @ feat_s.T
        k_ts = feat_t @ feat_s.T
        return krr_loss(k_ts, k_ss, y_s, y_t, self.reg)

    def distill(
        self,
        train: ImageData,
        ipc: int,
        *,
        seed: int,
        device: torch.device,
        progress: Progress = null_progress,
        checkpoint: Checkpoint | None = None,
    ) -> Summary:
        """Algorithm 1 of FRePo: meta step on S with a pool network, then one online step of that network.

        All randomness (initial images, network seeds, pool sampling, target
        batches) comes from one CPU generator seeded with ``seed``. The loop
        resumes from and saves into ``checkpoint``
        (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        check_ipc(train, ipc)
        generator = torch.Generator().manual_seed(seed)
        k = train.num_classes
        syn = initial_images(train, ipc, self.init, generator, device).requires_grad_(True)
        hard = torch.arange(k, device=device).repeat_interleave(ipc)
        labels = regression_targets(hard, k).requires_grad_(self.learn_labels)
        meta_params = [syn, labels] if self.learn_labels else [syn]
        optimizer = torch.optim.Adam(meta_params, lr=self.lr_img)
        pool = [
            _PoolMember(self, train, draw_seed(generator), device, j * self.max_online_steps // self.pool_size)
            for j in range(self.pool_size)
        ]
        real_x = train.x.to(device, torch.float32)
        real_y = regression_targets(train.y.to(device), k)
        history: list[float] = []

        def load_pool(states: list[dict]) -> None:
            for member, state in zip(pool, states, strict=True):
                member.load(state)

        loop = Loop(self.name, tensors={"syn": syn, "labels": labels}, optimizers=[optimizer],
                    generators=[generator], history=history,
                    extra=lambda: [member.state() for member in pool], load_extra=load_pool)

        for it in loop.range(self.iterations, checkpoint):
            member = pool[int(torch.randint(0, self.pool_size, (), generator=generator))]
            pick = sample_batch(len(train), self.batch_target, generator).to(device)
            loss = self.objective(member.net, syn, labels, real_x[pick], real_y[pick])
            value = check_finite(loss.item(), method=self.name, iteration=it, setting=SETTING)
            grads = torch.autograd.grad(loss, meta_params)  # the network's weights get no meta-gradient
            for param, grad in zip(meta_params, grads):
                param.grad = grad
            optimizer.step()
            history.append(value)

            if member.steps >= self.max_online_steps:
                pool[pool.index(member)] = _PoolMember(self, train, draw_seed(generator), device, 0)
            else:
                online_loss = F.mse_loss(member.net(syn.detach()), labels.detach())
                member.optimizer.zero_grad(set_to_none=True)
                online_loss.backward()
                member.optimizer.step()
                member.steps += 1
            if it % self.log_every == 0 or it == self.iterations:
                progress(it, self.iterations, loss=value)

        if not (torch.isfinite(syn).all() and torch.isfinite(labels).all()):
            check_finite(float("nan"), method=self.name, iteration=self.iterations, setting=SETTING)
        return finish_summary(train, syn, ipc, self.name, history, labels if self.learn_labels else None)
