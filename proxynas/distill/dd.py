"""Dataset Distillation (DD) by unrolled meta-learning.

Wang, Zhu, Torralba & Efros, "Dataset Distillation" (arXiv 1811.10959, 2018),
Algorithm 1. Synthetic images x~ and learnable step sizes eta~ are optimised
so that a freshly initialised network theta_0 ~ p(theta) (the
random-initialisation objective of section 3.2), after ``inner_steps`` steps
of eq. 1 (section 3.4, "multiple gradient descent steps"),

    theta_{i+1} = theta_i - eta~_i grad_theta l(x~, y~; theta_i)

has a low loss on real data, ``L = l(x_t, y_t; theta_T)``; x~ and eta~
follow Adam on grad L. The gradient flows back through the unrolled updates
(second-order terms included). As described for meta-model matching in the
survey by Sachdeva & McAuley (2023, section 2.1), back-propagation through
time may be truncated: only the last ``truncate`` inner steps stay on the
graph; the earlier ones are taken without it (their step sizes then receive
no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from proxynas.data.types import ImageData
from proxynas.distill.base import (
    DISTILLERS,
    INITS,
    Distiller,
    Summary,
    check_finite,
    check_ipc,
    descend,
    finish_summary,
    initial_images,
    seeded_convnet,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.fields import checked
from proxynas.numerics import draw_seed, sample_batch
from proxynas.progress import Progress, null_progress

SETTING = "distill.methods.dd.lr_img"  # what to lower when the objective diverges
# At iteration 1 nothing has been learned yet, so a divergence there comes from the inner steps.
SETTING_INNER = "distill.methods.dd.lr_inner"


def _inverse_softplus(value: float) -> float:
    """``r`` with ``softplus(r) = value`` (the step sizes are stored through a softplus to stay > 0)."""
    return float(torch.tensor(value, dtype=torch.float64).expm1().log())


@DISTILLERS.register("dd")
@dataclass(frozen=True)
class DD(Distiller):
    """Dataset Distillation (Wang et al. 2018) with a ConvNet learner and optional truncated BPTT.

    Each iteration draws a fresh seeded ConvNet (``width``/``depth``; the
    paper's "random init" setting), unrolls ``inner_steps`` full-batch SGD
    steps on the synthetic set with per-step learnable step sizes
    (initialised to ``lr_inner``, kept positive by a softplus, as in the
    paper's released code), and measures the cross-entropy on
    ``batch_real`` random real images. Back-propagation covers the last
    ``truncate`` steps (``truncate == inner_steps``: full BPTT, the paper).
    Adam (lr ``lr_img``, betas (0.5, 0.999) as in the released code) updates
    images and step sizes. ``init="real"`` starts from random real images
    (the paper starts from noise, ``init="noise"``; real images converge in
    far fewer iterations). ``Summary.history`` is the real-data loss of every
    iteration. A checkpoint holds the images, the raw step sizes, Adam's
    state, the generator's state and the history.

    ``lr_inner``/``lr_img`` (released code: 0.02 / 0.01, for LeNet on
    MNIST) were raised to 0.1 / 0.1 after a short sweep on digits (ipc 10,
    width 64, depth 2, 60 iterations, lr_inner 0.1: real loss 1.31 -> 0.88
    with lr_img 0.01, 1.16 -> 0.55 with lr_img 0.1). On 8x8 images use
    ``depth=2``: the depth-3 ConvNet ends on a 1x1 map and barely trains in
    ten steps, so the real loss stays near chance whatever the rates.
    """

    name: ClassVar[str] = "dd"
    iterative: ClassVar[bool] = True

    iterations: int = checked(200, gt=0)
    inner_steps: int = checked(10, gt=0)
    truncate: int = checked(10, gt=0)
    # a NaN step size is let through on purpose, and reported as a divergence naming lr_inner
    lr_inner: float = checked(0.1, gt=0, allow_nan=True)
    lr_img: float = checked(0.1, gt=0)
    batch_real: int = checked(256, gt=0)
    init: str = checked("real", choices=INITS)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    log_every: int = checked(10, gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.truncate > self.inner_steps:
            raise ValueError(f"truncate ({self.truncate}) must be <= inner_steps ({self.inner_steps})")

    def unrolled_loss(
        self,
        net: nn.Module,
        syn: torch.Tensor,
        syn_y: torch.Tensor,
        step_sizes: torch.Tensor,
        real_x: torch.Tensor,
        real_y: torch.Tensor,
    ) -> torch.Tensor:
        """``l(x_t, y_t; theta_T)`` after ``inner_steps`` SGD steps from ``net``'s weights (eq. 2-4).

        ``step_sizes`` is ``[inner_steps]`` (positive). The updates run through
        :func:`torch.func.functional_call`, so ``net`` itself is never
        modified. The returned loss is differentiable in ``syn`` and in the
        step sizes of the last ``truncate`` steps.
        """
        params = {name: p.detach().requires_grad_(True) for name, p in net.named_parameters()}
        first_tracked = self.inner_steps - self.truncate
        for i in range(self.inner_steps):
            tracked = i >= first_tracked
            images = syn if tracked else syn.detach()
            loss = F.cross_entropy(functional_call(net, params, (images,)), syn_y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=tracked)
            lr = step_sizes[i] if tracked else step_sizes[i].detach()
            params = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
            if not tracked:
                params = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        return F.cross_entropy(functional_call(net, params, (real_x,)), real_y)

    def optimise(
        self,
        train: ImageData,
        ipc: int,
        *,
        seed: int,
        device: torch.device,
        progress: Progress = null_progress,
        checkpoint: Checkpoint | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """Minimise the unrolled real-data loss over images and step sizes (Algorithm 1).

        Returns the synthetic images (classes in order, on ``device``), the
        learned step sizes ``[inner_steps]`` and the loss of every iteration.
        All randomness (initial images, network seeds, real batches) comes
        from one CPU generator seeded with ``seed``. The loop resumes from and
        saves into ``checkpoint`` (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        check_ipc(train, ipc)
        generator = torch.Generator().manual_seed(seed)
        syn = initial_images(train, ipc, self.init, generator, device).requires_grad_(True)
        syn_y = torch.arange(train.num_classes, device=device).repeat_interleave(ipc)
        raw_lr = torch.full((self.inner_steps,), _inverse_softplus(self.lr_inner), device=device)
        raw_lr.requires_grad_(True)
        optimizer = torch.optim.Adam([syn, raw_lr], lr=self.lr_img, betas=(0.5, 0.999))
        real_x = train.x.to(device, torch.float32)
        real_y = train.y.to(device)
        history: list[float] = []
        loop = Loop(self.name, tensors={"syn": syn, "raw_lr": raw_lr}, optimizers=[optimizer],
                    generators=[generator], history=history)

        for it in loop.range(self.iterations, checkpoint):
            net = seeded_convnet(train, draw_seed(generator), device, width=self.width, depth=self.depth)
            pick = sample_batch(len(train), self.batch_real, generator).to(device)
            loss = self.unrolled_loss(net, syn, syn_y, F.softplus(raw_lr), real_x[pick], real_y[pick])
            setting = SETTING_INNER if it == 1 else SETTING
            descend(optimizer, loss, history, method=self.name, iteration=it, iterations=self.iterations,
                    setting=setting, progress=progress, log_every=self.log_every)

        if not (torch.isfinite(syn).all() and torch.isfinite(raw_lr).all()):
            check_finite(float("nan"), method=self.name, iteration=self.iterations, setting=SETTING)
        return syn.detach(), F.softplus(raw_lr).detach(), history

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
        """The images of :meth:`optimise` as a summary (the learned step sizes are not part of it)."""
        syn, _, history = self.optimise(
            train, ipc, seed=seed, device=device, progress=progress, checkpoint=checkpoint
        )
        return finish_summary(train, syn, ipc, self.name, history)
