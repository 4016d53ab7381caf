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
training step on S, and a network past ``max_online_steps`` steps is
re-initialised (the model pool of section 3.2, Algorithm 1).

Settings follow the authors' released JAX code (github.com/yongchaoz/FRePo:
``script/distill.py``, ``lib/datadistillation/frepo.py``,
``lib/models/networks.py``) where the paper leaves them open. Its meta
optimiser is LAMB (You et al., ICLR 2020), written out here as
:class:`Lamb` because torch has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from proxynas.data.types import ImageData
from proxynas.distill.base import (
    DISTILLERS,
    INITS,
    Distiller,
    EvaluationProtocol,
    Summary,
    check_finite,
    check_ipc,
    finish_summary,
    initial_images,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.distill.krr import krr_loss, regression_targets
from proxynas.fields import checked
from proxynas.numerics import draw_seed, sample_batch
from proxynas.progress import Progress, null_progress

SETTING = "distill.methods.frepo.lr_img"  # what to lower when the objective diverges

#: the model pool's normalisation: batch norm (the released distillation command) or none (its evaluation net)
NORMS = ("batch", "none")
#: the meta optimiser of S: LAMB (released code) or Adam (the code's other choice)
OPTIMIZERS = ("lamb", "adam")
# flax.linen's lecun_normal draws from a normal truncated at 2 std, rescaled by this to keep variance 1/fan_in
_TRUNCATED_STD = 0.87962566103423978


class FRePoConvNet(nn.Module):
    """FRePo's network (released code ``lib/models/networks.py``, class ``Conv``, ``--arch conv``).

    ``depth`` blocks ``[norm ->] Conv3x3(width * 2^i) -> ReLU -> AvgPool2``
    (no norm before the first block; the width doubles every block: 128,
    256, 512), then a linear head on the flattened map, whose input is the
    feature f_theta of the kernel. Single-channel images get 2 extra pixels
    of padding in the first convolution (the code's MNIST case: 28 -> 32).
    Like :class:`~proxynas.models.ConvNet`, a pool is skipped once the map is
    1x1 (the code would fail there). Batch norm follows flax's: eps 1e-5,
    running statistics kept with weight 0.9 on the new batch (flax
    ``momentum=0.1``).
    """

    def __init__(
        self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 128, depth: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        h, w = image_size
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(depth):
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9))
            pad = 3 if i == 0 and in_channels == 1 else 1
            layers += [nn.Conv2d(channels, width * 2**i, kernel_size=3, padding=pad), nn.ReLU()]
            channels, h, w = width * 2**i, h + 2 * pad - 2, w + 2 * pad - 2
            if h >= 2 and w >= 2:
                layers.append(nn.AvgPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.embed_dim = channels * h * w
        self.head = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """f_theta(x): the flattened last feature map, ``[N, embed_dim]``."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def seeded_frepo_net(
    train: ImageData, seed: int, device: torch.device, *, width: int, depth: int, norm: str
) -> FRePoConvNet:
    """A :class:`FRePoConvNet` for ``train``'s shape with flax's default init, weights fixed by ``seed``.

    flax ``Conv``/``Dense`` defaults: LeCun-normal weights (truncated at 2
    std, variance 1/fan_in), zero biases; batch norm scale 1, bias 0. Drawn
    on the CPU in a forked RNG so every device gets the same weights.
    """
    c, h, w = train.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FRePoConvNet(c, train.num_classes, (h, w), width=width, depth=depth, norm=norm)
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                std = math.sqrt(1.0 / nn.init._calculate_correct_fan(module.weight, "fan_in")) / _TRUNCATED_STD
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(module.bias)
    return net.to(device)


class Lamb(torch.optim.Optimizer):
    """LAMB, You et al., "Large Batch Optimization for Deep Learning" (ICLR 2020), Algorithm 2.

    Per parameter tensor x with gradient g (``optax.lamb``, the released
    code's meta optimiser, has the same defaults):

        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2          (Adam moments)
        r = m^ / (sqrt(v^) + eps) + weight_decay * x              (m^, v^ bias-corrected)
        x = x - lr * (||x|| / ||r||) * r                          (trust ratio 1 if a norm is 0)
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D401 - torch's Optimizer interface
        if closure is not None:
            raise ValueError("Lamb does not take a closure")
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                t = state["step"]
                state["exp_avg"].mul_(b1).add_(param.grad, alpha=1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(param.grad, param.grad, value=1 - b2)
                m_hat = state["exp_avg"] / (1 - b1**t)
                v_hat = state["exp_avg_sq"] / (1 - b2**t)
                update = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * param
                param_norm, update_norm = param.norm(), update.norm()
                trust = torch.where((param_norm > 0) & (update_norm > 0), param_norm / update_norm, 1.0)
                param.sub_(group["lr"] * trust * update)


def label_margin_penalty(labels: torch.Tensor) -> torch.Tensor:
    """Mean of ``-min(top1 - top2, 1/K)`` over the rows of ``labels`` (released code ``lb_margin_th``).

    Added to the kernel loss so learned labels keep their top class at
    least 1/K ahead of the runner-up.
    """
    top2 = labels.topk(2, dim=1).values
    return -torch.clamp(top2[:, 0] - top2[:, 1], max=1.0 / labels.shape[1]).mean()


class _PoolMember:
    """One network of the pool with its online optimiser and online step count."""

    def __init__(self, frepo: "FRePo", train: ImageData, seed: int, device: torch.device, steps: int) -> None:
        self.net = frepo.network(train, seed, device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=frepo.online_lr)
        self.steps = steps

    def state(self) -> dict:
        """The member's weights and batch-norm statistics, online optimiser state and step count (for a checkpoint)."""
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load(self, state: dict) -> None:
        """Put :meth:`state` back into this member (same architecture; weights copied in place)."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


@DISTILLERS.register("frepo")
@dataclass(frozen=True)
class FRePo(Distiller):
    """FRePo with its released code's model pool and settings (github.com/yongchaoz/FRePo).

    Defaults are the released code's (``script/distill.py`` and its README
    command ``--arch conv --width 128 --depth 3 --normalization batch
    --learn_label True --max_online_updates 100 --num_nn_state 10
    --num_train_steps 500000``):

    * the pool holds ``pool_size`` :class:`FRePoConvNet` (``width``,
      ``depth``, ``norm="batch"``); its kernel features are taken with the
      batch-norm running statistics (flax ``train=False``);
    * each iteration draws one pool network uniformly and ``batch_target``
      (1024) random real images with centred one-hot targets, and takes one
      meta step on S of the KRR loss (``reg`` 1e-6, trace-scaled) plus
      :func:`label_margin_penalty`. With ``flip`` (the code's ``use_flip``,
      True for CIFAR-10; False for MNIST and CIFAR-100 ipc 10/50) the
      support is S and its horizontal mirror images, labels shared;
    * the meta optimiser is ``optimizer="lamb"`` (:class:`Lamb`) at
      ``lr_img`` 3e-4, cosine-decayed over ``iterations`` to ``lr_floor``
      (0.1) of it (``optax.cosine_decay_schedule(alpha=0.1)``); ``"adam"`` is
      the code's alternative;
    * ``learn_labels`` (True) learns Y_s, initialised to one-hot centred by
      1/K and divided by sqrt(K/10) (``init_proto(scale_y=True)``); learned
      labels come back as :attr:`Summary.soft_labels` (MSE targets);
    * the drawn network then takes one online Adam step (``online_lr``
      3e-4, constant) of the MSE ``1/2 ||f(x) - y||^2`` on up to
      ``online_batch`` (1000) random images of S (no flip, no
      augmentation), batch norm in training mode; a network that has taken
      more than ``max_online_steps`` (100) steps is re-initialised instead.
      Step counts start staggered at ``(max_online_steps // pool_size) * j``.

    The code keeps ZCA-whitened CIFAR (``zca_reg`` 0.1): that is the
    dataset's transform here, see :attr:`paper_protocol`. ``init="real"``
    draws random real images per class (``init_proto``).
    ``Summary.history`` holds every iteration's meta loss: the kernel loss
    plus the label margin penalty (the code's ``total_loss``; with labels
    that keep a margin of at least 1/K the penalty is the constant -1/K,
    so the values can be negative). A checkpoint
    holds the images and labels, the meta optimiser's state, every pool
    network's weights, batch-norm statistics, online optimiser state and
    step count, the generator's state and the history.
    """

    name: ClassVar[str] = "frepo"
    version: ClassVar[str] = "2"
    iterative: ClassVar[bool] = True
    presets: ClassVar = {
        # script/distill.py has no CIFAR-10 branch: ipc 1/10/50 run with the defaults (use_flip True)
        "cifar10-ipc1": {},
        "cifar10-ipc10": {},
        "cifar10-ipc50": {},
    }
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=2000,
        optimizer="adam",
        lr=3e-4,
        momentum=0.0,
        weight_decay=0.0,
        lr_decay=1.0,
        batch=500,
        augment="dsa",
        labels="learned",
        loss="mse",
        zca=True,
        source=(
            "FRePo released code script/eval.py: FRePoConvNet without normalisation, Adam 3e-4 (500 warm-up "
            "steps, cosine decay to 1%), MSE on the learned labels, batches of min(n, 500), one random "
            "augmentation of flip/color/crop/rotate/translate/cutout per batch, 1000/2000/5000 steps at "
            "ipc 1/10/50 (2000 epochs is ipc 10's), ZCA (zca_reg 0.1)"
        ),
    )

    iterations: int = checked(500_000, gt=0)
    pool_size: int = checked(10, gt=0)
    max_online_steps: int = checked(100, gt=0)
    online_lr: float = checked(3e-4, gt=0)
    online_batch: int = checked(1000, gt=0)
    optimizer: str = checked("lamb", choices=OPTIMIZERS)
    lr_img: float = checked(3e-4, gt=0)
    lr_floor: float = checked(0.1, ge=0, le=1)
    learn_labels: bool = checked(True)
    flip: bool = checked(True)
    reg: float = checked(1e-6, ge=0)
    batch_target: int = checked(1024, gt=0)
    init: str = checked("real", choices=INITS)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    norm: str = checked("batch", choices=NORMS)
    log_every: int = checked(10, gt=0)

    def network(self, train: ImageData, seed: int, device: torch.device) -> FRePoConvNet:
        """A freshly initialised pool network for ``train`` (weights fixed by ``seed``)."""
        return seeded_frepo_net(train, seed, device, width=self.width, depth=self.depth, norm=self.norm)

    def objective(
        self, net: nn.Module, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, y_t: torch.Tensor
    ) -> torch.Tensor:
        """FRePo eq. 3: KRR loss with the kernel ``f(X_t) f(X_s)^T`` of ``net``'s last hidden layer (``net.embed``).

        Target features are constants (no graph); ``y`` are ``[n, K]``. The
        caller sets ``net``'s mode (evaluation mode for the pool's kernel).
        """
        with torch.no_grad():
            feat_t = net.embed(x_t)
        feat_s = net.embed(x_s)
        k_ss = feat_s @ feat_s.T
        k_ts = feat_t @ feat_s.T
        return krr_loss(k_ts, k_ss, y_s, y_t, self.reg)

    def support(self, syn: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The KRR support: S, and with ``flip`` also its horizontal mirror images under the same labels."""
        if not self.flip:
            return syn, labels
        return torch.cat([syn, syn.flip(-1)]), torch.cat([labels, labels])

    def meta_lr(self, iteration: int) -> float:
        """``lr_img`` on the cosine schedule at 1-based ``iteration``.

        optax ``cosine_decay_schedule(decay_steps=iterations, alpha=lr_floor)``
        at update count ``iteration - 1``.
        """
        progress = min(iteration - 1, self.iterations) / self.iterations
        return self.lr_img * ((1 - self.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress)) + self.lr_floor)

    def initial_labels(self, num_classes: int, ipc: int, device: torch.device) -> torch.Tensor:
        """Y_s at step 0: centred one-hot divided by sqrt(K / 10) (released code ``init_proto(scale_y=True)``)."""
        hard = torch.arange(num_classes, device=device).repeat_interleave(ipc)
        return regression_targets(hard, num_classes) / math.sqrt(num_classes / 10)

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
        and online batches) comes from one CPU generator seeded with
        ``seed``. The loop resumes from and saves into ``checkpoint``
        (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        check_ipc(train, ipc)
        generator = torch.Generator().manual_seed(seed)
        k = train.num_classes
        syn = initial_images(train, ipc, self.init, generator, device).requires_grad_(True)
        labels = self.initial_labels(k, ipc, device).requires_grad_(self.learn_labels)
        meta_params = [syn, labels] if self.learn_labels else [syn]
        if self.optimizer == "lamb":
            optimizer: torch.optim.Optimizer = Lamb(meta_params, lr=self.lr_img)
        else:
            optimizer = torch.optim.Adam(meta_params, lr=self.lr_img)
        stagger = self.max_online_steps // self.pool_size
        pool = [_PoolMember(self, train, draw_seed(generator), device, stagger * j) for j in range(self.pool_size)]
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
            slot = int(torch.randint(0, self.pool_size, (), generator=generator))
            member = pool[slot]
            pick = sample_batch(len(train), self.batch_target, generator).to(device)
            member.net.eval()  # the kernel reads the batch-norm running statistics
            x_s, y_s = self.support(syn, labels)
            loss = self.objective(member.net, x_s, y_s, real_x[pick], real_y[pick]) + label_margin_penalty(labels)
            value = check_finite(loss.item(), method=self.name, iteration=it, setting=SETTING)
            grads = torch.autograd.grad(loss, meta_params)  # the network's weights get no meta-gradient
            for param, grad in zip(meta_params, grads):
                param.grad = grad
            for group in optimizer.param_groups:
                group["lr"] = self.meta_lr(it)
            optimizer.step()
            history.append(value)

            if member.steps > self.max_online_steps:
                pool[slot] = _PoolMember(self, train, draw_seed(generator), device, 0)
            else:
                online = sample_batch(len(syn), self.online_batch, generator).to(device)
                member.net.train()
                out = member.net(syn.detach()[online])
                online_loss = 0.5 * ((out - labels.detach()[online]) ** 2).sum(dim=1).mean()
                member.optimizer.zero_grad(set_to_none=True)
                online_loss.backward()
                member.optimizer.step()
                member.steps += 1
            if it % self.log_every == 0 or it == self.iterations:
                progress(it, self.iterations, loss=value)

        if not (torch.isfinite(syn).all() and torch.isfinite(labels).all()):
            check_finite(float("nan"), method=self.name, iteration=self.iterations, setting=SETTING)
        return finish_summary(train, syn, ipc, self.name, history, labels if self.learn_labels else None)
