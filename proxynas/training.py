"""Train and evaluate one network: shared by data proxies and full-data references.

:func:`fit` trains and records the learning curve (mean training loss of every
epoch and, when asked, validation loss/accuracy), which the training proxy
turns into learning-curve scores (Ru et al., "Speedy Performance Estimation
for Neural Architecture Search", NeurIPS 2021); :func:`train_model` is
:func:`fit` for callers that only want the trained network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from proxynas.augment import DSA
from proxynas.data.types import ImageData
from proxynas.device import to_device_async
from proxynas.distill.base import StepSchedule
from proxynas.errors import DivergenceError
from proxynas.fields import Checked, checked
from proxynas.models.fused import per_network_cross_entropy
from proxynas.models.parallel import SideBySide
from proxynas.progress import Progress, null_progress
from proxynas.step_graphs import StepGraphs, sgd_step_


@dataclass(frozen=True)
class TrainSettings(Checked):
    """SGD recipe. Defaults follow NAS-Bench-201's (Nesterov SGD, cosine, wd 5e-4).

    ``steps`` (when set) replaces ``epochs`` as the budget: training stops
    after exactly that many optimizer steps and the cosine schedule spans
    them; an "epoch" is still one pass over the data (the last may be
    partial). At ipc 10 and batch 256 an epoch is a single step, so a budget
    in steps is the natural unit for summaries.

    ``lr_from_summary``: train with the step size a distiller learned with
    its summary (MTT/TESLA's alpha, ``Summary.learned_lr``) instead of
    ``lr`` when the summary carries one; a summary with a learned per-step
    schedule (DD's, ``Summary.learned_schedule``) is replayed instead: its
    step batches in order, one plain SGD step each (no momentum, weight
    decay, augmentation or cosine) at its learned rate, for exactly its
    number of steps, which then is the budget.

    ``curve_every``: measure validation loss/accuracy every that many epochs
    while training (0 = only after the last epoch, which is always measured).

    ``channels_last``: whether networks may train channels-last (NHWC). Fused
    training (:func:`fit_fused`) on CUDA runs its activations channels-last
    (true) or NCHW (false): grouped convolutions with few channels per group
    are not always faster channels-last, which ``benchmarks/throughput.py
    --contiguous`` measures; on a CPU it stays NCHW (its per-edge gathers made
    it slower channels-last). One-by-one training (:func:`fit`) runs
    channels-last on any device when asked to (``fit(channels_last=True)``):
    the training proxy asks for it for spaces that declare it pays
    (``SearchSpace.trains_channels_last``, NB201's cells).

    ``compile``: fused training runs its training forward (and so its
    backward) through ``torch.compile``, which can fuse the per-edge
    gathers, ReLUs and BatchNorms of a fused group into fewer kernels; it
    compiles once per batch shape of each group (minutes), so it can pay only
    for large groups and long schedules, and has not yet been shown to pay
    (``benchmarks/throughput.py --compile``). Evaluation runs uncompiled.

    ``cuda_graphs``: every training step (forward, backward, SGD update) is
    captured once per batch shape and replayed as one CUDA graph
    (:mod:`proxynas.step_graphs`), for small networks whose steps are bound
    by the host launching kernels; the optimizer is then PyTorch's SGD
    written with a device-tensor learning rate. On a CPU, which has no
    graphs, the same steps run eagerly and train bit for bit as without the
    setting; on CUDA the results agree within float rounding. Off by
    default: ``benchmarks/throughput.py --cuda-graphs`` measures whether it
    pays.
    """

    epochs: int = checked(50, ge=1)
    steps: int | None = checked(None, ge=1)
    batch_size: int = checked(128, ge=1)
    lr: float = checked(0.1, gt=0)
    momentum: float = checked(0.9, ge=0, lt=1)
    weight_decay: float = checked(5e-4, ge=0)
    nesterov: bool = True
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: Literal["none", "flip", "dsa"] = "none"
    amp: bool = True
    # Train on the labels a distiller learned (KIP, FRePo, TESLA) when the
    # summary carries them; false trains on the images' hard classes.
    soft_labels: bool = True
    lr_from_summary: bool = False
    curve_every: int = checked(0, ge=0)
    # A speed knob (channels-last or NCHW activations, see the docstring); it changes only
    # float rounding, and is out of cache keys at its default so existing caches stay valid.
    channels_last: bool = checked(True, keyed_when_set=True)
    # torch.compile the fused network's training forward (not by default: see the docstring)
    compile: bool = checked(False, keyed_when_set=True)
    # replay each training step as a CUDA graph (not by default: see the docstring)
    cuda_graphs: bool = checked(False, keyed_when_set=True)

    def budget_epochs(self, num_images: int) -> int:
        """Passes over ``num_images`` training images the budget makes (the last possibly partial)."""
        per_epoch = math.ceil(num_images / min(self.batch_size, num_images))
        return self.epochs if self.steps is None else math.ceil(self.steps / per_epoch)


@dataclass(frozen=True)
class EpochRecord:
    """One pass over the training data: its mean training loss and, when measured, validation loss/accuracy."""

    epoch: int  # 1-based
    steps: int  # optimizer steps taken by the end of this epoch
    train_loss: float  # mean of the epoch's mini-batch losses (the loss the network trains on)
    val_loss: float | None = None  # mean cross-entropy on the evaluation data
    val_acc: float | None = None  # top-1 accuracy in percent on the evaluation data

    def as_dict(self) -> dict[str, float | int | None]:
        return {"epoch": self.epoch, "steps": self.steps, "train_loss": self.train_loss,
                "val_loss": self.val_loss, "val_acc": self.val_acc}


@dataclass(frozen=True)
class Fitted:
    """A trained network and its learning curve (one record per epoch)."""

    model: nn.Module
    curve: tuple[EpochRecord, ...]

    @property
    def final(self) -> EpochRecord:
        return self.curve[-1]


def _augmenter(kind: str):
    if kind == "dsa":
        dsa = DSA(per_sample=True)  # the DSA paper draws per-image params when training
        return lambda x, step: dsa(x, seed=step)
    if kind == "flip":
        # drawn from the step's seed (like DSA's), not the global generator: an arch's
        # flips then do not depend on what else drew random numbers (building it, or
        # other archs trained at once), so fused and one-by-one training see the same
        def flip(x: torch.Tensor, step: int) -> torch.Tensor:
            coins = torch.rand(len(x), 1, 1, 1, generator=torch.Generator().manual_seed(step))
            return torch.where(to_device_async(coins, x.device) < 0.5, x.flip(3), x)

        return flip
    return lambda x, step: x


def _soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target_logits.softmax(dim=1))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge-distillation loss: ``T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))``.

    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
    (2015), Sec. 2: matching the teacher's softened distribution, scaled by
    ``T^2`` so gradient magnitudes do not shrink as the temperature grows.
    The label-distillation recipes that relabel each augmented view of a
    summary with a teacher (FKD, Shen & Xing, ECCV 2022; SRe2L, Yin et al.,
    NeurIPS 2023; RDED, Sun et al., CVPR 2024) train the student on this loss.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    p_teacher = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * t * t


#: optimizer steps between two reads of the device-side divergence flags: reading a
#: device value waits for the device, so the hot loop only does it this often
DIVERGENCE_CHECK_STEPS = 50


def fit(
    model: nn.Module,
    data: ImageData,
    settings: TrainSettings,
    *,
    device: torch.device,
    seed: int,
    label: str = "model",
    setting_prefix: str = "proxy",
    progress: Progress = null_progress,
    soft_labels: torch.Tensor | None = None,
    label_loss: str = "ce",
    learned_lr: float | None = None,
    learned_schedule: StepSchedule | None = None,
    eval_data: ImageData | None = None,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    check_every: int = DIVERGENCE_CHECK_STEPS,
    channels_last: bool = False,
) -> Fitted:
    """Train ``model`` on ``data`` with ``settings``, recording the learning curve.

    Raises DivergenceError on a non-finite loss: the check runs on the
    device every step and is read every ``check_every`` steps (and after
    the last), naming the epoch where the loss first went non-finite. With
    ``soft_labels``
    (``[N, K]``, used when ``settings.soft_labels``) the loss is MSE onto them
    (``label_loss="mse"``, kernel-ridge targets) or cross-entropy against
    ``softmax(soft_labels)`` (``"ce"``, logit labels). ``learned_lr`` (a
    summary's learned step size) replaces ``settings.lr`` when
    ``settings.lr_from_summary``.

    With a ``teacher`` network every augmented batch is relabelled by it and
    the loss is :func:`kd_loss` at ``temperature`` (label distillation; the
    images' own labels are then unused).

    With ``eval_data`` the network is evaluated (loss and accuracy) after every
    ``settings.curve_every``-th epoch and always after the last one.
    Evaluation draws no random numbers, so it does not change the training.

    ``channels_last`` (with ``settings.channels_last``) trains and evaluates
    the network channels-last: the same computation in another memory
    layout, so the results differ from NCHW's by float rounding only.
    """
    model.to(device).train()
    channels_last = channels_last and settings.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = _criterion(settings, soft_labels, label_loss)

    def losses(xb: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None) -> torch.Tensor:
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        logits = model(xb).float()
        if teacher_logits is None:
            return criterion(logits, target).reshape(1)
        return kd_loss(logits, teacher_logits, temperature).reshape(1)

    def measure() -> list[tuple[float, float]]:
        result = evaluate(model, eval_data, device=device, channels_last=channels_last)
        model.train()
        return [result]

    curves = _train(
        losses, model, [label], data, settings, device=device, seed=seed,
        setting_prefix=setting_prefix, progress=progress, soft_labels=soft_labels, learned_lr=learned_lr,
        learned_schedule=learned_schedule,
        measure=measure if eval_data is not None else None, teacher=teacher, check_every=check_every,
    )
    return Fitted(model, curves[0])


def fit_fused(
    fused: nn.Module,
    data: ImageData,
    settings: TrainSettings,
    *,
    device: torch.device,
    seed: int,
    labels: Sequence[str],
    setting_prefix: str = "proxy",
    progress: Progress = null_progress,
    soft_labels: torch.Tensor | None = None,
    label_loss: str = "ce",
    learned_lr: float | None = None,
    learned_schedule: StepSchedule | None = None,
    eval_data: ImageData | None = None,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    check_every: int = DIVERGENCE_CHECK_STEPS,
) -> list[tuple[EpochRecord, ...]]:
    """:func:`fit` for ``len(labels)`` networks fused into one (:mod:`proxynas.models.fused`).

    ``fused`` maps a batch to ``[B, n, classes]`` logits, network k's in
    column k. Every network sees the batches, augmentations and step sizes
    :func:`fit` would give it with the same ``seed``; its loss is its own
    (the networks' losses are summed for one backward pass, so each gets its
    own gradient) and so is its learning curve, one per network in order.
    A non-finite loss in any network raises DivergenceError naming the first
    such network. On CUDA the fused network runs channels-last unless
    ``settings.channels_last`` is false.
    """
    count = len(labels)
    fused.to(device).train()
    channels_last = device.type == "cuda" and settings.channels_last
    if channels_last:
        fused.to(memory_format=torch.channels_last)
    hard = soft_labels is None or not settings.soft_labels
    forward = torch.compile(fused, dynamic=False) if settings.compile else fused

    def losses(xb: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None) -> torch.Tensor:
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        logits = forward(xb).float()
        if teacher_logits is not None:
            return _per_network_kd(logits, teacher_logits, temperature)
        if hard:
            return per_network_cross_entropy(logits, target)
        if label_loss == "mse":
            return (logits - target[:, None, :]).pow(2).mean(dim=(0, 2))
        return per_network_cross_entropy(logits, target.softmax(dim=1))

    def measure() -> list[tuple[float, float]]:
        result = evaluate_fused(fused, eval_data, count, device=device, channels_last=settings.channels_last)
        fused.train()
        return result

    curves = _train(
        losses, fused, list(labels), data, settings, device=device, seed=seed,
        setting_prefix=setting_prefix, progress=progress, soft_labels=soft_labels, learned_lr=learned_lr,
        learned_schedule=learned_schedule,
        measure=measure if eval_data is not None else None, teacher=teacher, check_every=check_every,
    )
    return curves


def fit_side_by_side(
    networks: Sequence[nn.Module],
    data: ImageData,
    settings: TrainSettings,
    *,
    device: torch.device,
    seed: int,
    labels: Sequence[str],
    setting_prefix: str = "proxy",
    progress: Progress = null_progress,
    soft_labels: torch.Tensor | None = None,
    label_loss: str = "ce",
    learned_lr: float | None = None,
    learned_schedule: StepSchedule | None = None,
    eval_data: ImageData | None = None,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    check_every: int = DIVERGENCE_CHECK_STEPS,
    channels_last: bool = False,
) -> list[tuple[EpochRecord, ...]]:
    """:func:`fit` for ``networks`` trained at once, side by side (:class:`~proxynas.models.parallel.SideBySide`).

    Each network gets its own loss, computed as :func:`fit` computes it,
    its own gradient (the losses are summed for one backward pass), the
    batches, augmentations and step sizes :func:`fit` would give it with
    the same ``seed``, and is evaluated as :func:`fit` evaluates it; on a
    CPU each therefore trains bit for bit as it does alone. On CUDA network
    k runs on stream k. One learning curve per network, in order;
    ``channels_last`` as :func:`fit`'s.
    """
    together = SideBySide(networks).to(device).train()
    channels_last = channels_last and settings.channels_last
    if channels_last:
        together.to(memory_format=torch.channels_last)
    criterion = _criterion(settings, soft_labels, label_loss)

    def losses(xb: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None) -> torch.Tensor:
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        logits = together(xb).float()
        # each column contiguous, as a network's own logits are, so the loss kernels round alike
        columns = [logits[:, k].contiguous() for k in range(len(together))]
        if teacher_logits is None:
            return torch.stack([criterion(column, target) for column in columns])
        return torch.stack([kd_loss(column, teacher_logits, temperature) for column in columns])

    def measure() -> list[tuple[float, float]]:
        results = [evaluate(net, eval_data, device=device, channels_last=channels_last) for net in together.networks]
        together.train()
        return results

    return _train(
        losses, together, list(labels), data, settings, device=device, seed=seed,
        setting_prefix=setting_prefix, progress=progress, soft_labels=soft_labels, learned_lr=learned_lr,
        learned_schedule=learned_schedule,
        measure=measure if eval_data is not None else None, teacher=teacher, check_every=check_every,
    )


def _criterion(settings: TrainSettings, soft_labels: torch.Tensor | None, label_loss: str):
    if soft_labels is not None and settings.soft_labels:
        return F.mse_loss if label_loss == "mse" else _soft_cross_entropy
    return F.cross_entropy


def _per_network_kd(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """:func:`kd_loss` of each column of fused logits ``[B, n, classes]`` against one teacher: ``[n]``."""
    t = float(temperature)
    log_p_student = F.log_softmax(logits / t, dim=2)
    p_teacher = F.softmax(teacher_logits / t, dim=1)[:, None, :].expand_as(log_p_student)
    kl = F.kl_div(log_p_student, p_teacher, reduction="none").sum(dim=(0, 2))
    return kl / len(logits) * t * t


def _train(
    losses,
    network: nn.Module,
    labels: list[str],
    data: ImageData,
    settings: TrainSettings,
    *,
    device: torch.device,
    seed: int,
    setting_prefix: str,
    progress: Progress,
    soft_labels: torch.Tensor | None,
    learned_lr: float | None,
    measure,
    learned_schedule: StepSchedule | None = None,
    teacher: nn.Module | None,
    check_every: int,
) -> list[tuple[EpochRecord, ...]]:
    """The SGD loop of :func:`fit`, :func:`fit_fused` and :func:`fit_side_by_side`: one learning curve per network.

    ``losses(batch, targets, teacher_logits)`` gives the ``[n]`` losses of the
    n networks (``network``'s parameters) on a batch; ``measure()`` their
    ``(val_loss, val_acc)``. Nothing in the loop reads a device value except
    every ``check_every`` steps, at the end, and when ``measure`` runs. Each
    step is :class:`_EagerSteps`'s, or with ``settings.cuda_graphs``
    :class:`_GraphedSteps`'s.
    """
    count = len(labels)
    x_all = data.x.to(device)
    y_all = (
        soft_labels.to(device, torch.float32) if soft_labels is not None and settings.soft_labels
        else data.y.to(device)
    )
    if teacher is not None:
        teacher = teacher.to(device).eval()
    replay = settings.lr_from_summary and learned_schedule is not None
    use_learned = settings.lr_from_summary and learned_lr is not None and not replay
    lr = float(learned_lr) if use_learned else settings.lr
    fix = (
        f"the summary's learned lr {lr:g} diverges; set {setting_prefix}.lr_from_summary: false"
        if use_learned or replay
        else f"lower {setting_prefix}.lr (now {settings.lr})"
    )
    n = len(x_all)
    if replay:
        # DD's evaluation (released train_steps_inplace): the step batches in order, each at its learned rate
        per_class = n // data.num_classes
        step_batches = [idx.to(device) for idx in learned_schedule.batch_indices(data.num_classes, per_class)]
        step_sizes = learned_schedule.step_sizes
        steps_per_epoch, total = len(step_batches), len(step_sizes)
        momentum, weight_decay, nesterov, lr = 0.0, 0.0, False, step_sizes[0]
    else:
        batch = min(settings.batch_size, n)
        steps_per_epoch = math.ceil(n / batch)
        total = settings.steps if settings.steps is not None else settings.epochs * steps_per_epoch
        momentum, weight_decay = settings.momentum, settings.weight_decay
        nesterov = settings.nesterov and settings.momentum > 0
    epochs = math.ceil(total / steps_per_epoch)
    params = list(network.parameters())
    augment = _augmenter("none" if replay else settings.augment)
    gen = torch.Generator().manual_seed(seed)
    use_amp = settings.amp and device.type == "cuda"
    bad_epoch = torch.full((count,), -1, dtype=torch.long, device=device)
    bad_value = torch.zeros(count, device=device)
    loss_sum = torch.zeros(count, device=device)

    def record(detached: torch.Tensor, epoch: int | torch.Tensor) -> None:
        # in place, so that a CUDA graph's copy of a step updates these very tensors
        newly_bad = ~torch.isfinite(detached) & (bad_epoch < 0)
        bad_value.copy_(torch.where(newly_bad, detached, bad_value))
        bad_epoch.copy_(torch.where(newly_bad, epoch, bad_epoch))
        loss_sum.add_(detached)

    recipe = _Recipe(
        lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, total=total,
        rates=tuple(step_sizes) if replay else None, cosine=settings.schedule == "cosine" and not replay,
        use_amp=use_amp,
    )
    steps: _EagerSteps | _GraphedSteps
    if settings.cuda_graphs:
        steps = _GraphedSteps(losses, record, network, recipe, device=device, state=[bad_epoch, bad_value, loss_sum])
    else:
        steps = _EagerSteps(losses, record, params, recipe, device=device)

    def check() -> None:
        first_bad = bad_epoch.tolist()
        diverged = [k for k, e in enumerate(first_bad) if e >= 0]
        if diverged:
            k = diverged[0]
            raise DivergenceError(
                f"training {labels[k]}: loss became {float(bad_value[k])} at epoch {first_bad[k]}; {fix}"
            )

    step = 0
    pending: list[tuple[int, int, torch.Tensor, int, list[tuple[float, float]] | None]] = []
    curves: list[list[EpochRecord]] = [[] for _ in labels]

    def flush() -> None:
        for epoch_no, steps, sums_now, taken, measured in pending:
            sums = sums_now.tolist()
            for k in range(count):
                val = measured[k] if measured is not None else (None, None)
                curves[k].append(EpochRecord(epoch_no, steps, sums[k] / taken, *val))
            progress(epoch_no, epochs, loss=sum(c[-1].train_loss for c in curves) / count)
        pending.clear()

    for epoch in range(epochs):
        order = to_device_async(torch.randperm(n, generator=gen), device)
        loss_sum.zero_()
        taken = min(steps_per_epoch, total - step)
        for i in range(taken):
            idx = step_batches[i] if replay else order[i * batch : (i + 1) * batch]
            xb = augment(x_all[idx], seed * 1_000_003 + step)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    teacher_logits = teacher(xb).float()
            steps.at(step, epoch)
            steps((xb, y_all[idx] if teacher is None else None, teacher_logits))
            step += 1
            if step % check_every == 0:
                check()
        last = epoch + 1 == epochs
        measured = None
        if measure is not None and (last or settings.curve_every and (epoch + 1) % settings.curve_every == 0):
            check()  # a diverged network is not worth evaluating
            measured = measure()
        pending.append((epoch + 1, step, loss_sum.clone(), taken, measured))
        if last or measured is not None or step % check_every < taken:
            check()
            flush()
    steps.finish()
    return [tuple(c) for c in curves]


@dataclass(frozen=True)
class _Recipe:
    """What one SGD step needs besides the data: the optimizer's settings and each step's rate."""

    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    total: int
    rates: tuple[float, ...] | None  # the learned per-step rates of a replayed schedule
    cosine: bool
    use_amp: bool

    def step_rates(self) -> list[float]:
        """The learning rate of every step, the very floats :class:`_EagerSteps`'s optimizer uses."""
        if self.rates is not None:
            return list(self.rates)
        if not self.cosine:
            return [self.lr] * self.total
        # stepping the scheduler itself, not its closed form: its recursive form rounds differently
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(probe, T_max=self.total)
        rates = []
        for _ in range(self.total):
            rates.append(probe.param_groups[0]["lr"])
            probe.step()
            sched.step()
        return rates


class _EagerSteps:
    """Training steps as PyTorch runs them: torch.optim.SGD, the cosine schedule stepped after each step."""

    def __init__(self, losses, record, params: list[torch.Tensor], recipe: _Recipe, *, device: torch.device) -> None:
        self.losses, self.record, self.recipe, self.device = losses, record, recipe, device
        self.opt = torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
            foreach=True,  # torch only defaults to foreach on CUDA; on CPU it is ~2x faster for small nets
        )
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=recipe.total) if recipe.cosine else None
        self.epoch = 0

    def at(self, step: int, epoch: int) -> None:
        """The next call is step ``step`` (from 0) of epoch ``epoch``."""
        self.epoch = epoch
        if self.recipe.rates is not None:
            for group in self.opt.param_groups:
                group["lr"] = self.recipe.rates[step]

    def __call__(self, inputs: tuple[torch.Tensor | None, ...]) -> None:
        xb, target, teacher_logits = inputs
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.recipe.use_amp):
            loss = self.losses(xb, target, teacher_logits)
        self.record(loss.detach(), self.epoch)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()

    def finish(self) -> None:
        """Nothing to release: the last step's gradients stay, as PyTorch leaves them."""


class _GraphedSteps:
    """Training steps as CUDA graph replays (:mod:`proxynas.step_graphs`); eager, on the same buffers, on a CPU.

    The rate of each step is a device tensor set before the step (the
    floats :class:`_EagerSteps` uses) and the update is
    :func:`~proxynas.step_graphs.sgd_step_`, PyTorch's SGD written with it:
    on a CPU the two train bit for bit alike; on CUDA a graph may run other
    kernels (cuDNN's choice, autocast uncached), so they agree within float
    rounding. ``state`` lists the loop's own
    tensors a step changes (divergence flags, loss sums), which warm-up
    steps must leave as they were.
    """

    def __init__(
        self, losses, record, network: nn.Module, recipe: _Recipe, *, device: torch.device,
        state: list[torch.Tensor],
    ) -> None:
        self.rates = recipe.step_rates()
        # locals, not attributes, in the step: a closure holding self would make a reference
        # cycle, and the graphs' memory would wait for the garbage collector after each network
        lr_now = self.lr_now = torch.full((), self.rates[0], device=device)
        epoch_now = self.epoch_now = torch.zeros((), dtype=torch.long, device=device)
        params = self.params = list(network.parameters())
        buffers = [torch.zeros_like(p) for p in params] if recipe.momentum else []

        def step(inputs: tuple[torch.Tensor | None, ...]) -> None:
            xb, target, teacher_logits = inputs
            for p in params:
                p.grad = None
            # autocast's weight cache must be off while capturing (PyTorch's CUDA graphs notes)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.use_amp, cache_enabled=False):
                loss = losses(xb, target, teacher_logits)
            record(loss.detach(), epoch_now)
            loss.sum().backward()
            # as torch.optim.SGD, a parameter without a gradient is left alone (no decay, no momentum)
            live = [k for k, p in enumerate(params) if p.grad is not None]
            sgd_step_(
                [params[k] for k in live], [params[k].grad for k in live], [buffers[k] for k in live] if buffers else [],
                lr_now, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov,
            )

        self.graphs = StepGraphs(step, [*params, *network.buffers(), *buffers, *state], device=device)

    def at(self, step: int, epoch: int) -> None:
        """The next call is step ``step`` (from 0) of epoch ``epoch``."""
        self.lr_now.fill_(self.rates[step])
        self.epoch_now.fill_(epoch)

    def __call__(self, inputs: tuple[torch.Tensor | None, ...]) -> None:
        self.graphs(inputs)

    def finish(self) -> None:
        """Drop the gradients: they are the last captured graph's buffers (in its memory pool, which
        they would keep held as long as the trained network lives), not the last step's."""
        for p in self.params:
            p.grad = None


def train_model(model: nn.Module, data: ImageData, settings: TrainSettings, **options: Any) -> nn.Module:
    """:func:`fit` without evaluation data (same keyword ``options``), returning the trained ``model``."""
    return fit(model, data, settings, **options).model


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ImageData, *, device: torch.device, batch_size: int = 1024,
    channels_last: bool = False,
) -> tuple[float, float]:
    """``(mean cross-entropy, top-1 accuracy in percent)`` of ``model`` on ``data`` (eval mode).

    ``channels_last`` feeds the batches channels-last (for a model trained so).
    """
    model.to(device).eval()
    correct, loss = 0, 0.0
    for start in range(0, len(data), batch_size):
        xb = data.x[start : start + batch_size].to(device)
        yb = data.y[start : start + batch_size].to(device)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(xb)
        correct += int((logits.argmax(1) == yb).sum())
        loss += float(F.cross_entropy(logits.float(), yb, reduction="sum"))
    n = max(len(data), 1)
    return loss / n, 100.0 * correct / n


def accuracy(model: nn.Module, data: ImageData, *, device: torch.device, batch_size: int = 1024) -> float:
    """Top-1 accuracy in percent."""
    return evaluate(model, data, device=device, batch_size=batch_size)[1]


@torch.no_grad()
def evaluate_fused(
    fused: nn.Module, data: ImageData, count: int, *, device: torch.device, batch_size: int = 1024,
    channels_last: bool = True,
) -> list[tuple[float, float]]:
    """:func:`evaluate` for ``count`` fused networks: one ``(mean cross-entropy, accuracy %)`` each.

    The sums stay on the device until the last batch, so the host waits once.
    """
    fused.to(device).eval()
    correct = torch.zeros(count, dtype=torch.long, device=device)
    loss = torch.zeros(count, dtype=torch.float64, device=device)
    for start in range(0, len(data), batch_size):
        xb = data.x[start : start + batch_size].to(device)
        yb = data.y[start : start + batch_size].to(device)
        if device.type == "cuda" and channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = fused(xb)  # [B, n, classes]
        correct += (logits.argmax(2) == yb[:, None]).sum(0)
        per_image = F.cross_entropy(logits.float().transpose(1, 2), yb[:, None].expand(-1, count), reduction="none")
        loss += per_image.sum(0).double()
    n = max(len(data), 1)
    return [(lo / n, 100.0 * c / n) for lo, c in zip(loss.tolist(), correct.tolist())]
