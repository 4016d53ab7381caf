"""Dataset Distillation (DD) by unrolled meta-learning.

Wang, Zhu, Torralba & Efros, "Dataset Distillation" (arXiv 1811.10959, 2018),
Algorithm 1 with the multi-step, multi-epoch variant of section 3.4. The
synthetic set is split into ``S`` step batches x~_1 .. x~_S (each holding
``images_per_step`` images of every class); a freshly initialised network
theta_0 ~ p(theta) (the random-initialisation objective of section 3.2)
takes ``T = S * distill_epochs`` steps of eq. 1, cycling through the batches,

    theta_{t+1} = theta_t - eta~_t grad_theta l(x~_{t mod S}, y~_{t mod S}; theta_t),

each with its own learned step size eta~_t, and the real-data loss after the
last one, ``L = l(x_t, y_t; theta_T)`` (eq. 2-4), is minimised over the
images and the ``T`` step sizes by Adam. The gradient flows back through the
unrolled updates, second-order terms included. As described for
meta-model matching in the survey by Sachdeva & McAuley (2023, section 2.1),
back-propagation through time may be truncated (a deviation, off by
default): only the last ``truncate`` inner steps stay on the graph.

The method's output is a training *schedule*: the images in step order and
one step size per step. A network trained on the summary the DD way replays
exactly those ``T`` plain-SGD steps (:meth:`DD.replay`, the released code's
``train_steps_inplace``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from proxynas.data.types import ImageData
from proxynas.distill.base import (
    DISTILLERS,
    INITS,
    Distiller,
    EvaluationProtocol,
    StepSchedule,
    Summary,
    check_finite,
    check_ipc,
    descend,
    finish_summary,
    initial_images,
    seeded_convnet,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.errors import ConfigError
from proxynas.fields import checked
from proxynas.numerics import draw_seed, sample_batch
from proxynas.progress import Progress, null_progress

SETTING = "distill.methods.dd.lr_img"  # what to lower when the objective diverges
# At iteration 1 nothing has been learned yet, so a divergence there comes from the inner steps.
SETTING_INNER = "distill.methods.dd.lr_inner"

#: the learner the images are distilled for: the released code's CIFAR-10 network, or the project's ConvNet
NETWORKS = ("alexcifarnet", "convnet")

#: one step batch: its images and their class labels
StepBatch = tuple[torch.Tensor, torch.Tensor]


def _inverse_softplus(value: float) -> float:
    """``r`` with ``softplus(r) = value`` (the step sizes are stored through a softplus to stay > 0)."""
    return float(torch.tensor(value, dtype=torch.float64).expm1().log())


def _pooled(size: int) -> int:
    """Side of a map after ``MaxPool2d(3, stride=2, padding=1)``."""
    return (size + 2 - 3) // 2 + 1


class AlexCifarNet(nn.Module):
    """DD's CIFAR-10 learner (released code ``networks.AlexCifarNet``, after Krizhevsky's cuda-convnet).

    Two ``Conv5x5(64) -> ReLU -> MaxPool3/2 -> LRN`` blocks (the second pools
    after its LRN, as released) and a 384-192-K fully connected head. The
    classifier's input size follows ``image_size`` (the released code
    hard-codes 64 * 8 * 8 for 32x32 images). No in-place ReLU, so the
    unrolled second-order graph stays intact.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        lrn = dict(size=4, alpha=0.001 / 9.0, beta=0.75, k=1.0)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.LocalResponseNorm(**lrn),
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.LocalResponseNorm(**lrn),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        h, w = (_pooled(_pooled(side)) for side in image_size)
        self.classifier = nn.Sequential(
            nn.Linear(64 * h * w, 384), nn.ReLU(), nn.Linear(384, 192), nn.ReLU(), nn.Linear(192, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def seeded_alexcifarnet(train: ImageData, seed: int, device: torch.device) -> AlexCifarNet:
    """An :class:`AlexCifarNet` for ``train``'s shape with the released code's default init, fixed by ``seed``.

    ``--init xavier --init_param 1``: Xavier-normal weights (gain 1), zero
    biases. Drawn on the CPU in a forked RNG, like :func:`seeded_convnet`.
    """
    c, h, w = train.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = AlexCifarNet(c, train.num_classes, (h, w))
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(module.weight, gain=1.0)
                nn.init.zeros_(module.bias)
    net.requires_grad_(False)
    return net.to(device)


def step_batches(syn: torch.Tensor, ipc: int, images_per_step: int) -> list[StepBatch]:
    """The step batches of a class-ordered synthetic set: batch ``s`` holds images ``s*m .. s*m+m-1`` of every class.

    ``syn`` is ``[K * ipc, C, H, W]`` (``[0]*ipc + [1]*ipc + ...``), ``m`` is
    ``images_per_step``; there are ``ipc / m`` batches, classes in order
    inside each (the released code's ``distilled_images_per_class_per_step``
    layout). Slices of ``syn``, so gradients reach it.
    """
    k = len(syn) // ipc
    per_class = syn.view(k, ipc, *syn.shape[1:])
    labels = torch.arange(k, device=syn.device).repeat_interleave(images_per_step)
    return [
        (per_class[:, s : s + images_per_step].reshape(-1, *syn.shape[1:]), labels)
        for s in range(0, ipc, images_per_step)
    ]


@DISTILLERS.register("dd")
@dataclass(frozen=True)
class DD(Distiller):
    """Dataset Distillation (Wang et al. 2018); defaults are the released code's (SsnL/dataset-distillation).

    The ``ipc`` images per class form ``ipc / images_per_step`` step batches
    (``--distilled_images_per_class_per_step`` 1, so ipc 10 is the paper's
    10 steps); the unrolled inner loop runs through them ``distill_epochs``
    times (``--distill_epochs`` 3), each of the ``T`` steps with its own
    learned step size, initialised to ``lr_inner`` (``--distill_lr``: 0.02
    in ``base_options.py``, 0.001 in the README's CIFAR-10 command, the
    ``cifar10-ipc10`` preset) and kept positive by a softplus. Each
    iteration draws a fresh seeded learner (``--train_nets_type
    unknown_init``): ``network="alexcifarnet"`` (the CIFAR-10 network,
    Xavier init) or, a deviation, the project's ``"convnet"``
    (``width``/``depth``); measures the cross-entropy on ``batch_real``
    random real images (``--batch_size`` 1024); and takes one Adam step
    (lr ``lr_img``, ``--lr`` 0.01, betas (0.5, 0.999)) on the images and
    step sizes, the lr halved (``decay_factor``) every ``decay_every``
    iterations. The released code counts in epochs over the real set
    (``--epochs`` 400, ``--decay_epochs`` 40, batches of 1024): on CIFAR-10's
    50,000 images that is 49 iterations an epoch, so ``iterations`` 19,600
    and ``decay_every`` 1,960. ``init="noise"`` (standard normal, the
    released code) or ``"real"`` images. ``truncate`` (None: full BPTT, the
    paper) keeps only the last ``truncate`` steps on the graph.

    :meth:`optimise` returns the learned step sizes with the images;
    :meth:`distill`'s summary carries them as ``Summary.learned_schedule``
    (one step size cannot stand for a per-step schedule, so
    ``Summary.learned_lr`` stays None): a training proxy with
    ``lr_from_summary`` replays them as :meth:`replay` does.

    ``Summary.history`` is the real-data loss of every iteration. A
    checkpoint holds the images, the raw step sizes, Adam's state, the
    generator's state and the history.
    """

    name: ClassVar[str] = "dd"
    #: 3: the summary carries the learned step sizes (``learned_schedule``)
    version: ClassVar[str] = "3"
    iterative: ClassVar[bool] = True
    presets: ClassVar = {
        # README "Cifar10": AlexCifarNet, --distill_lr 0.001 (DD paper, random init: 36.8 +- 1.2 %)
        "cifar10-ipc10": {"lr_inner": 0.001},
    }
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=3,
        optimizer="sgd",
        lr=0.001,
        momentum=0.0,
        weight_decay=0.0,
        lr_decay=1.0,
        batch=10,
        augment="none",
        labels="hard",
        loss="ce",
        learned_lr=True,
        source=(
            "Wang et al. 2018, released code basics.train_steps_inplace/evaluate_steps: AlexCifarNet replays "
            "the learned schedule (10 step batches of one image per class x 3 epochs, plain SGD at each step's "
            "learned rate, in order): learned_lr replays Summary.learned_schedule (DD.replay, and a proxy's "
            "lr_from_summary); epochs/lr/batch here are only what a summary without a schedule would get"
        ),
    )

    iterations: int = checked(19_600, gt=0)
    images_per_step: int = checked(1, gt=0)
    distill_epochs: int = checked(3, gt=0)
    truncate: int | None = checked(None, gt=0)
    # a NaN step size is let through on purpose, and reported as a divergence naming lr_inner
    lr_inner: float = checked(0.02, gt=0, allow_nan=True)
    lr_img: float = checked(0.01, gt=0)
    decay_every: int = checked(1960, gt=0)
    decay_factor: float = checked(0.5, gt=0, le=1)
    batch_real: int = checked(1024, gt=0)
    init: str = checked("noise", choices=INITS)
    network: str = checked("alexcifarnet", choices=NETWORKS)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    log_every: int = checked(10, gt=0)

    def inner_steps(self, ipc: int) -> int:
        """``T``: step batches (``ipc / images_per_step``) times ``distill_epochs``; one learned step size each."""
        return ipc // self.images_per_step * self.distill_epochs

    def check_steps(self, ipc: int) -> int:
        """Raise a one-line :class:`ConfigError` unless the step batches tile ``ipc``; return ``T``."""
        if ipc % self.images_per_step:
            raise ConfigError(
                f"distill.methods.dd.images_per_step ({self.images_per_step}) must divide distill.ipc ({ipc})"
            )
        steps = self.inner_steps(ipc)
        if self.truncate is not None and self.truncate > steps:
            raise ConfigError(
                f"distill.methods.dd.truncate ({self.truncate}) exceeds the {steps} inner steps "
                f"(ipc / images_per_step x distill_epochs); lower it"
            )
        return steps

    def learner(self, train: ImageData, seed: int, device: torch.device) -> nn.Module:
        """The randomly initialised network theta_0 the inner loop trains (weights fixed by ``seed``)."""
        if self.network == "alexcifarnet":
            return seeded_alexcifarnet(train, seed, device)
        return seeded_convnet(train, seed, device, width=self.width, depth=self.depth)

    def unrolled_loss(
        self,
        net: nn.Module,
        batches: Sequence[StepBatch],
        step_sizes: torch.Tensor,
        real_x: torch.Tensor,
        real_y: torch.Tensor,
    ) -> torch.Tensor:
        """``l(x_t, y_t; theta_T)`` after one SGD step per entry of ``step_sizes`` from ``net``'s weights (eq. 1-4).

        Step ``t`` trains on ``batches[t mod len(batches)]`` at rate
        ``step_sizes[t]``. The updates run through
        :func:`torch.func.functional_call`, so ``net`` itself is never
        modified. The loss is differentiable in the batches' images and in
        the step sizes of the last ``truncate`` steps (all of them when
        ``truncate`` is None).
        """
        steps = len(step_sizes)
        first_tracked = 0 if self.truncate is None else steps - self.truncate
        params = {name: p.detach().requires_grad_(True) for name, p in net.named_parameters()}
        for t in range(steps):
            tracked = t >= first_tracked
            images, labels = batches[t % len(batches)]
            images = images if tracked else images.detach()
            loss = F.cross_entropy(functional_call(net, params, (images,)), labels)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=tracked)
            lr = step_sizes[t] if tracked else step_sizes[t].detach()
            params = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
            if not tracked:
                params = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        return F.cross_entropy(functional_call(net, params, (real_x,)), real_y)

    def replay(self, net: nn.Module, syn: torch.Tensor, ipc: int, step_sizes: torch.Tensor) -> nn.Module:
        """A copy of ``net`` trained the DD way on ``syn``: the ``T`` learned plain-SGD steps, batches in order.

        The evaluation of the paper (released code ``train_steps_inplace``):
        step ``t`` trains on step batch ``t mod S`` of ``syn`` (classes in
        order, as :meth:`distill` returns them) at rate ``step_sizes[t]``.
        """
        batches = step_batches(syn.detach(), ipc, self.images_per_step)
        trained = copy.deepcopy(net).requires_grad_(True)
        params = list(trained.parameters())
        for t, lr in enumerate(step_sizes.detach().tolist()):
            images, labels = batches[t % len(batches)]
            with torch.enable_grad():
                grads = torch.autograd.grad(F.cross_entropy(trained(images), labels), params)
            with torch.no_grad():
                for param, grad in zip(params, grads):
                    param.sub_(lr * grad)
        return trained.requires_grad_(False)

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
        learned step sizes ``[T]`` and the loss of every iteration. All
        randomness (initial images, network seeds, real batches) comes from
        one CPU generator seeded with ``seed``. The loop resumes from and
        saves into ``checkpoint`` (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        check_ipc(train, ipc)
        steps = self.check_steps(ipc)
        generator = torch.Generator().manual_seed(seed)
        syn = initial_images(train, ipc, self.init, generator, device).requires_grad_(True)
        raw_lr = torch.full((steps,), _inverse_softplus(self.lr_inner), device=device)
        raw_lr.requires_grad_(True)
        optimizer = torch.optim.Adam([syn, raw_lr], lr=self.lr_img, betas=(0.5, 0.999))
        real_x = train.x.to(device, torch.float32)
        real_y = train.y.to(device)
        history: list[float] = []
        loop = Loop(self.name, tensors={"syn": syn, "raw_lr": raw_lr}, optimizers=[optimizer],
                    generators=[generator], history=history)

        for it in loop.range(self.iterations, checkpoint):
            # StepLR of the released code, as a function of the iteration so a resumed run needs no scheduler state
            for group in optimizer.param_groups:
                group["lr"] = self.lr_img * self.decay_factor ** ((it - 1) // self.decay_every)
            net = self.learner(train, draw_seed(generator), device)
            pick = sample_batch(len(train), self.batch_real, generator).to(device)
            batches = step_batches(syn, ipc, self.images_per_step)
            loss = self.unrolled_loss(net, batches, F.softplus(raw_lr), real_x[pick], real_y[pick])
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
        """The images of :meth:`optimise`, classes in order, with its per-step rates as ``learned_schedule``."""
        syn, step_sizes, history = self.optimise(
            train, ipc, seed=seed, device=device, progress=progress, checkpoint=checkpoint
        )
        schedule = StepSchedule(tuple(float(v) for v in step_sizes.cpu().tolist()), self.images_per_step)
        return replace(finish_summary(train, syn, ipc, self.name, history), learned_schedule=schedule)
