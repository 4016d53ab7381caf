"""Trajectory matching: the machinery shared by MTT and TESLA.

Cazenavette et al., "Dataset Distillation by Matching Training Trajectories"
(CVPR 2022; "MTT"). Expert networks are trained on the real data and their
parameters recorded after every epoch (the expert trajectories tau*). Each
distillation iteration (Algorithm 1) draws an expert and a start epoch
``t < T+`` (``max_start_epoch``), starts a student at theta*_t and takes
N = ``syn_steps`` SGD steps on augmented mini-batches b_n of the synthetic set
with a learnable step size alpha,

    theta_hat_{t+n+1} = theta_hat_{t+n} - alpha * grad_theta l(A(b_n); theta_hat_{t+n}),

then minimises, over the images and alpha, the parameter distance to the
expert M = ``expert_epochs`` epochs later, normalised by how far the expert
itself moved (eq. 1):

    L = ||theta_hat_{t+N} - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2.

Cui et al., "Scaling Up Dataset Distillation to ImageNet-1K with Constant
Memory" (ICML 2023; "TESLA") keep this objective and change how its gradient
is computed (Sec. 3.2) and what the images are labelled with (Sec. 3.3).

Shared here, so each method module holds only its own part:

* :meth:`TrajectoryMatching.prepare`: the expert trajectories (the cached
  preparation stage of :class:`~proxynas.distill.base.PreparedDistiller`);
* :class:`FlatStudent`: the ConvNet evaluated at an explicit flat parameter
  vector, so SGD steps on it are ordinary differentiable tensor operations;
* :class:`Unroll`: one iteration's inner problem (start, target, batches,
  augmentation, labels) and :func:`trajectory_distance` (eq. 1);
* :meth:`TrajectoryMatching.distill_prepared`: Algorithm 1's outer loop. The
  gradient of eq. 1 for one unroll is each subclass's
  :meth:`TrajectoryMatching.matching_gradients`, the student's labels in an
  iteration its :meth:`TrajectoryMatching.iteration_labels`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from proxynas.augment import DEFAULT_STRATEGY, DSA, check_strategy
from proxynas.data.types import ImageData
from proxynas.distill.base import (
    INITS,
    PreparedDistiller,
    Summary,
    check_finite,
    check_ipc,
    initial_images,
    make_summary,
    seeded_convnet,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.distill.gradient_matching import epoch_batches
from proxynas.errors import ConfigError, DivergenceError
from proxynas.fields import checked
from proxynas.models.convnet import NORMS
from proxynas.numerics import draw_seed
from proxynas.progress import Progress, null_progress

# Batch norm keeps running statistics outside the parameters, which an expert
# trajectory of parameters cannot carry; every other ConvNet norm is stateless.
STUDENT_NORMS = tuple(n for n in NORMS if n != "batchnorm")
# alpha is floored at this fraction of lr_teacher: a step size <= 0 would turn
# the student's descent into ascent, which eq. 1 alone does not rule out.
_MIN_LR_FRACTION = 1e-3

#: What :meth:`TrajectoryMatching.prepare` returns: one ``[epochs + 1, P]``
#: float32 CPU tensor per expert, row e = the flat parameters after e epochs.
Trajectories = list[torch.Tensor]


class FlatStudent:
    """A ConvNet evaluated at an explicit flat parameter vector (``torch.func.functional_call``).

    MTT differentiates through the student's SGD steps (Algorithm 1), so the
    parameters must be tensors in the autograd graph rather than module state;
    one flat vector also makes eq. 1 a plain squared norm and an expert
    checkpoint a single row. ``net`` only supplies the architecture and the
    parameter order; its own weights are never used.
    """

    def __init__(self, net: nn.Module) -> None:
        if any(True for _ in net.buffers()):
            raise ValueError("the student network must hold no buffers (use a norm without running statistics)")
        named = list(net.named_parameters())
        self.net = net
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]

    @property
    def numel(self) -> int:
        """P, the length of a flat parameter vector."""
        return sum(self.sizes)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """``module``'s parameters (same architecture) as one detached flat vector, in :attr:`names` order."""
        params = dict(module.named_parameters())
        return torch.cat([params[name].detach().reshape(-1) for name in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped like each named parameter (gradients flow back to ``flat``)."""
        return {
            name: chunk.view(shape)
            for name, chunk, shape in zip(self.names, flat.split(self.sizes), self.shapes)
        }

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, self.unflatten(flat), (x,))

    def loss(self, flat: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy l of Algorithm 1: on class indices, or on ``softmax(target)`` for logit labels.

        The soft form is the one ``proxynas.training.train_model`` trains a
        summary with, so distillation and evaluation see the same loss.
        """
        logits = self.logits(flat, x)
        if target.is_floating_point():
            return F.cross_entropy(logits, target.softmax(dim=1))
        return F.cross_entropy(logits, target)


def trajectory_distance(theta: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MTT eq. 1: ``||theta_hat_{t+N} - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``.

    Normalising by the expert's own displacement makes iterations that start
    late in training (where experts move little) count as much as early ones.
    """
    return (theta - target).pow(2).sum() / (start - target).pow(2).sum()


@dataclass
class Unroll:
    """One iteration's inner problem: everything eq. 1 depends on besides the learned tensors.

    ``steps[n]`` = (indices of the synthetic images in mini-batch b_n, the DSA
    seed of that step). Because augmentation is reproduced from the seed, a
    method may evaluate a step twice (TESLA's second pass) and see exactly the
    same batch. ``soft_labels`` are the iteration's ``[n, K]`` logit labels
    (TESLA's, assigned by the target checkpoint), or None to train the student
    on ``hard_labels``; they are constants of the iteration, not learned.
    """

    student: FlatStudent
    start: torch.Tensor  # theta*_t, flat, on the device
    target: torch.Tensor  # theta*_{t+M}
    steps: Sequence[tuple[torch.Tensor, int]]
    augment: DSA
    hard_labels: torch.Tensor  # [n] int64, class of every synthetic image
    soft_labels: torch.Tensor | None = None

    def step_loss(self, theta: torch.Tensor, syn: torch.Tensor, n: int) -> torch.Tensor:
        """l(A(b_n); theta): the student's training loss at step n."""
        idx, seed = self.steps[n]
        x = self.augment(syn[idx], seed)
        target = self.hard_labels[idx] if self.soft_labels is None else self.soft_labels[idx]
        return self.student.loss(theta, x, target)

    def distance(self, theta: torch.Tensor) -> torch.Tensor:
        return trajectory_distance(theta, self.start, self.target)


@dataclass
class Matched:
    """eq. 1 for one unroll and its gradients with respect to the images and alpha."""

    loss: float
    syn: torch.Tensor
    lr: torch.Tensor


@dataclass(frozen=True)
class TrajectoryMatching(PreparedDistiller):
    """MTT's Algorithm 1 over cached expert trajectories; subclasses supply the gradient of eq. 1.

    Distillation settings (defaults: MTT's CIFAR-10 IPC 10 row, see
    :mod:`proxynas.distill.mtt` for the sources):

    * ``iterations``: outer iterations (one unroll and one image update each);
    * ``syn_steps`` (N), ``expert_epochs`` (M), ``max_start_epoch`` (T+):
      the start epoch is uniform in ``[0, max_start_epoch)``;
    * ``lr_img`` / ``momentum_img``: SGD on the pixels (MTT code: momentum
      0.5). The papers' values are for their data: 100 at CIFAR-10 IPC 1/10
      is a step in ZCA-whitened pixel space (the pipeline's ``data`` ZCA
      setting); their un-whitened runs use 1000;
    * ``lr_teacher``: the initial synthetic step size alpha; ``lr_lr``: SGD
      (momentum 0.5) on alpha, which is kept positive;
    * ``batch_syn``: synthetic images per student step (``None`` = all);
    * ``init``: ``"real"`` (random real images of each class) or ``"noise"``;
    * ``dsa``: the :class:`DSA` strategy applied to every student batch, one
      omega per image as in MTT's code (``"none"`` disables it);
    * ``log_every``: progress is reported every that many iterations, with
      the objective (``loss``) and the current alpha (``syn_lr``).

    The final alpha is returned with the summary (``Summary.learned_lr``):
    both papers train their evaluation networks at it (released
    ``distill.py``: ``args.lr_net = syn_lr.item()`` before
    ``evaluate_synset``), and a proxy does the same with ``lr_from_summary``.

    Expert settings (``prepare_fields``; changing only the settings above
    reuses cached experts): ``num_experts`` experts trained for
    ``expert_train_epochs`` epochs by SGD (``expert_lr``, ``expert_momentum``,
    ``expert_weight_decay``; MTT: 0.01 / 0 / 0) in batches of
    ``expert_batch`` with ``expert_dsa`` augmentation (one omega per image),
    on a ConvNet of ``width`` / ``depth`` / ``norm`` that the student shares.
    Defaults: MTT's 100 experts of 50 epochs (README and ``buffer.py``
    ``--num_experts=100 --train_epochs=50``): 5000 passes over the training
    set, paid once per expert setting since the preparation is cached.

    ``Summary.history`` holds eq. 1 of every iteration. A checkpoint of
    :meth:`distill_prepared` holds the images, alpha, the SGD momenta of
    both, the generator's state and the history (the experts are the cached
    preparation, not part of it; labels a subclass assigns are recomputed
    every iteration, so they are not either).
    """

    iterative: ClassVar[bool] = True
    prepare_fields: ClassVar[tuple[str, ...]] = (
        "num_experts",
        "expert_train_epochs",
        "expert_lr",
        "expert_momentum",
        "expert_weight_decay",
        "expert_batch",
        "expert_dsa",
        "width",
        "depth",
        "norm",
    )
    prepare_placeholders: ClassVar[Mapping[str, Any]] = {"max_start_epoch": 1, "expert_epochs": 1}

    iterations: int = checked(5000, gt=0)
    syn_steps: int = checked(30, gt=0)
    expert_epochs: int = checked(2, gt=0)
    max_start_epoch: int = checked(20, gt=0)
    # NaN learning rates are let through on purpose, and reported as a
    # divergence at the iteration where they bite
    lr_img: float = checked(100.0, gt=0, allow_nan=True)
    momentum_img: float = checked(0.5, ge=0, lt=1)
    lr_lr: float = checked(1e-5, gt=0, allow_nan=True)
    lr_teacher: float = checked(0.001, gt=0, allow_nan=True)
    batch_syn: int | None = checked(None, gt=0)
    init: str = checked("real", choices=INITS)
    dsa: str = checked(DEFAULT_STRATEGY, check=check_strategy)
    log_every: int = checked(10, gt=0)
    # -- experts (prepare_fields) --
    num_experts: int = checked(100, gt=0)
    expert_train_epochs: int = checked(50, gt=0)
    expert_lr: float = checked(0.01, gt=0, allow_nan=True)
    expert_momentum: float = checked(0.0, ge=0, lt=1)
    expert_weight_decay: float = checked(0.0, ge=0)
    expert_batch: int = checked(256, gt=0)
    expert_dsa: str = checked(DEFAULT_STRATEGY, check=check_strategy)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    norm: str = "instancenorm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in STUDENT_NORMS:
            raise ValueError(
                f"unknown norm {self.norm!r}; choose one of: {', '.join(STUDENT_NORMS)} "
                "(batchnorm's running statistics are not parameters, so trajectories cannot carry them)"
            )
        last = self.max_start_epoch - 1 + self.expert_epochs
        if last > self.expert_train_epochs:
            # caught here, at config load, rather than after the experts have trained
            raise ValueError(
                f"max_start_epoch - 1 + expert_epochs = {last} needs experts trained for at least {last} epochs"
                f" but expert_train_epochs is {self.expert_train_epochs}; lower max_start_epoch or"
                " expert_epochs, or raise expert_train_epochs"
            )

    # ------------------------------------------------------------ settings
    def setting(self, field: str) -> str:
        """Dotted config path of one of this method's settings (for error messages)."""
        return f"distill.methods.{self.name}.{field}"

    def blame(self, syn: torch.Tensor) -> str:
        """The setting(s) to lower when eq. 1 is not finite.

        Non-finite images come from their own step size; with finite images
        the student itself blew up, which a too large alpha (grown by
        ``lr_lr``) causes as often as extreme pixels.
        """
        if not torch.isfinite(syn).all():
            return self.setting("lr_img")
        return f"{self.setting('lr_img')} or {self.setting('lr_lr')}"

    def student(self, train: ImageData, device: torch.device) -> FlatStudent:
        """The expert/student architecture for ``train``'s image shape (weights unused)."""
        net = seeded_convnet(train, 0, device, width=self.width, depth=self.depth, norm=self.norm)
        return FlatStudent(net)

    # ------------------------------------------------------------- experts
    def prepare(
        self, train: ImageData, *, seed: int, device: torch.device, progress: Progress = null_progress
    ) -> Trajectories:
        """The expert trajectories tau* (MTT Sec. 3.1; released ``buffer.py`` settings).

        Each expert is a seeded ConvNet trained on ``train`` by SGD with a
        constant learning rate; its flat parameters are recorded at
        initialisation and after every epoch. Returns ``num_experts`` CPU
        float32 tensors ``[expert_train_epochs + 1, P]`` (4 bytes x P per
        checkpoint: about 1.3 MB for ConvNet-3/128 on 32x32x3 images). All
        randomness (initialisations, batches, augmentation) comes from one
        CPU generator seeded with ``seed``.
        """
        student = self.student(train, device)
        generator = torch.Generator().manual_seed(seed)
        x, y = train.x.to(device, torch.float32), train.y.to(device)
        augment = DSA(strategy=self.expert_dsa, per_sample=True)
        total = self.num_experts * self.expert_train_epochs
        trajectories = []
        for j in range(self.num_experts):
            net = seeded_convnet(
                train, draw_seed(generator), device, width=self.width, depth=self.depth, norm=self.norm
            )
            net.requires_grad_(True).train()
            optimizer = torch.optim.SGD(
                net.parameters(), lr=self.expert_lr, momentum=self.expert_momentum,
                weight_decay=self.expert_weight_decay,
            )
            checkpoints = [student.flatten(net).cpu()]
            for epoch in range(self.expert_train_epochs):
                for idx in epoch_batches(len(x), self.expert_batch, 1, generator):
                    idx = idx.to(device)
                    xb = augment(x[idx], draw_seed(generator)) if augment.parts else x[idx]
                    loss = F.cross_entropy(net(xb), y[idx])
                    if not torch.isfinite(loss):
                        raise DivergenceError(
                            f"{self.name}: expert {j} training loss became {loss.item()} at epoch {epoch + 1}; "
                            f"lower {self.setting('expert_lr')}"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                checkpoints.append(student.flatten(net).cpu())
                progress(j * self.expert_train_epochs + epoch + 1, total)
            trajectories.append(torch.stack(checkpoints))
        return trajectories

    def check_trajectories(self, prepared: Trajectories, student: FlatStudent) -> Trajectories:
        """Raise :class:`ConfigError` unless ``prepared`` fits this student and reaches epoch T+ - 1 + M."""
        if not isinstance(prepared, (list, tuple)) or not prepared:
            raise ConfigError(f"{self.name}: expected a non-empty list of expert trajectories, got {type(prepared)}")
        epochs = min(len(t) for t in prepared) - 1
        for t in prepared:
            if t.ndim != 2 or t.shape[1] != student.numel:
                raise ConfigError(
                    f"{self.name}: expert trajectories hold {t.shape[-1]} parameters but the student has "
                    f"{student.numel}; width/depth/norm must match the experts'"
                )
        last = self.max_start_epoch - 1 + self.expert_epochs
        if last > epochs:
            raise ConfigError(
                f"{self.name}: max_start_epoch - 1 + expert_epochs = {last} needs experts trained for at least "
                f"{last} epochs but they have {epochs}; lower {self.setting('max_start_epoch')} or "
                f"{self.setting('expert_epochs')}, or raise {self.setting('expert_train_epochs')}"
            )
        return list(prepared)

    def iteration_labels(
        self, student: FlatStudent, target: torch.Tensor, syn: torch.Tensor
    ) -> torch.Tensor | None:
        """The ``[n, K]`` logit labels the student trains with in one iteration, or None for the classes.

        Called once per iteration with the iteration's target checkpoint
        theta*_{t+M} and the current (detached) images; MTT trains on the
        classes. The last iteration's labels are returned with the summary.
        """
        return None

    # -------------------------------------------------------------- driver
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
        # Checked before the experts are trained: too few images per class must not cost their training.
        check_ipc(train, ipc)
        return super().distill(train, ipc, seed=seed, device=device, progress=progress, checkpoint=checkpoint)

    @abstractmethod
    def matching_gradients(self, unroll: Unroll, syn: torch.Tensor, lr: torch.Tensor) -> Matched:
        """eq. 1 for ``unroll`` and its gradients w.r.t. ``syn`` and ``lr`` (alpha), which both require grad.

        Gradients are returned, never accumulated into any ``.grad``.
        """

    def distill_prepared(
        self,
        train: ImageData,
        ipc: int,
        prepared: Trajectories,
        *,
        seed: int,
        device: torch.device,
        progress: Progress = null_progress,
        checkpoint: Checkpoint | None = None,
    ) -> Summary:
        """MTT Algorithm 1 on the experts ``prepared`` by :meth:`prepare`.

        Each iteration draws an expert uniformly, a start epoch uniformly in
        ``[0, max_start_epoch)``, ``syn_steps`` mini-batches (a reshuffle of
        the synthetic set split into ``batch_syn``-sized chunks, reshuffled
        when used up, as in MTT's code) with one DSA seed each, labels the
        images (:meth:`iteration_labels`), then takes one SGD step on the
        images and alpha with the gradient of :meth:`matching_gradients`. All
        randomness comes from one CPU generator seeded with ``seed``. The
        loop resumes from and saves into ``checkpoint``
        (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        check_ipc(train, ipc)
        student = self.student(train, device)
        trajectories = self.check_trajectories(prepared, student)
        generator = torch.Generator().manual_seed(seed)
        k = train.num_classes
        syn = initial_images(train, ipc, self.init, generator, device).requires_grad_(True)
        hard = torch.arange(k, device=device).repeat_interleave(ipc)
        lr = torch.tensor(float(self.lr_teacher), device=device, requires_grad=True)
        optimizers = [
            torch.optim.SGD([syn], lr=self.lr_img, momentum=self.momentum_img),
            torch.optim.SGD([lr], lr=self.lr_lr, momentum=0.5),
        ]
        augment = DSA(strategy=self.dsa, per_sample=True)
        n = len(syn)
        batch = n if self.batch_syn is None else min(self.batch_syn, n)
        min_lr = self.lr_teacher * _MIN_LR_FRACTION
        history: list[float] = []
        loop = Loop(self.name, tensors={"syn": syn, "lr": lr}, optimizers=optimizers, generators=[generator],
                    history=history)

        labels = None
        for it in loop.range(self.iterations, checkpoint):
            expert = trajectories[int(torch.randint(0, len(trajectories), (), generator=generator))]
            t = int(torch.randint(0, self.max_start_epoch, (), generator=generator))
            chunks: list[torch.Tensor] = []
            steps = []
            for _ in range(self.syn_steps):
                if not chunks:
                    chunks = list(torch.randperm(n, generator=generator).split(batch))
                steps.append((chunks.pop().to(device), draw_seed(generator)))
            target = expert[t + self.expert_epochs].to(device)
            labels = self.iteration_labels(student, target, syn.detach())
            unroll = Unroll(
                student=student,
                start=expert[t].to(device),
                target=target,
                steps=steps,
                augment=augment,
                hard_labels=hard,
                soft_labels=labels,
            )
            matched = self.matching_gradients(unroll, syn, lr)
            value = check_finite(matched.loss, method=self.name, iteration=it, setting=self.blame(syn))
            syn.grad, lr.grad = matched.syn, matched.lr
            for optimizer in optimizers:
                optimizer.step()
            with torch.no_grad():
                lr.clamp_(min=min_lr)
            if not torch.isfinite(lr):
                check_finite(float("nan"), method=self.name, iteration=it, setting=self.setting("lr_lr"))
            history.append(value)
            if it % self.log_every == 0 or it == self.iterations:
                progress(it, self.iterations, loss=value, syn_lr=float(lr.detach()))

        # The last step can itself overflow even though its loss was finite.
        if not torch.isfinite(syn).all():
            check_finite(float("nan"), method=self.name, iteration=self.iterations, setting=self.setting("lr_img"))
        summary = make_summary(train, syn.detach().split(ipc), self.name, history)
        # alpha travels with the images: the step size they were distilled for
        summary = replace(summary, learned_lr=float(lr.detach()))
        if labels is None:
            return summary
        soft = labels.detach().to("cpu", torch.float32).contiguous()
        return replace(summary, soft_labels=soft, label_loss="ce")


__all__ = [
    "FlatStudent",
    "Matched",
    "STUDENT_NORMS",
    "TrajectoryMatching",
    "Trajectories",
    "Unroll",
    "trajectory_distance",
]
