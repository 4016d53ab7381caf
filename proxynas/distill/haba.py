"""HaBa: bases and small hallucinator networks, learned by trajectory matching with an adversarial contrastive constraint.

Liu, Wang, Yang, Ye & Wang, "Dataset Distillation via Factorization"
(NeurIPS 2022; released code github.com/Huage001/DatasetFactorization).

**The summary** factorises a dataset into *bases* (image-sized, ``ipc`` per
class, each keeping its class) and |H| = ``hallucinators`` small networks
shared by all classes; every hallucinator turns every basis into an image, so
the summary expands to ``ipc * hallucinators`` images per class. A
hallucinator (the paper's Fig. 3, right; the released ``StyleTranslator``)
is an encoder convolution, a per-position affine map and a decoder
transposed convolution:

    h(b) = dec(sigma * enc(b) + mu).

**The objective** is MTT's trajectory matching (Cazenavette et al., CVPR
2022, eq. 1; :mod:`proxynas.distill.trajectory`) on hallucinated images --
each student step trains on one random hallucinator applied to a batch of
bases -- plus the adversarial contrastive constraint: an adversary network
(a ConvNet whose flattened features are the embedding) learns to recognise
that two hallucinations of one basis carry the same content (a classification
loss, a similarity loss and a supervised contrastive loss, Khosla et al.
NeurIPS 2020), while bases and hallucinators are learned to make the
adversary's embeddings of two hallucinations of a basis *dissimilar*, which
keeps the hallucinators diverse. The paper's equation numbers could not be
checked here (its text was not available); the terms and weights below are
those of the released ``distill_fac.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from proxynas.augment import DEFAULT_STRATEGY, DSA, check_strategy
from proxynas.data.types import ImageData
from proxynas.distill.base import (
    DISTILLERS,
    INITS,
    EvaluationProtocol,
    PreparedDistiller,
    Summary,
    check_finite,
    check_ipc,
    initial_images,
    preset_name,
    seeded_convnet,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.distill.factorized import Factorization, FactorizedDistiller, Shape, factorized_summary, seeded_build
from proxynas.distill.mtt import MTT
from proxynas.distill.trajectory import STUDENT_NORMS, Trajectories, trajectory_distance
from proxynas.errors import ConfigError
from proxynas.fields import checked
from proxynas.models import ConvNet
from proxynas.numerics import draw_seed
from proxynas.progress import Progress, null_progress

__all__ = ["HaBa", "HallucinatedBases", "Hallucinator", "supervised_contrastive"]

# The released distill_fac.py clips the learned step size at 0.001 after every update.
_MIN_LR = 1e-3


class Hallucinator(nn.Module):
    """h(b) = dec(sigma * enc(b) + mu): the released ``StyleTranslator`` for ``C x H x W`` images.

    ``enc`` is a ``kernel x kernel`` convolution without padding and ``dec``
    the transposed convolution back to ``H x W``; sigma and mu are learned per
    channel and position of the encoded map, starting at 1 and 0.
    """

    def __init__(self, shape: Shape, kernel: int) -> None:
        super().__init__()
        c, h, w = shape
        self.enc = nn.Conv2d(c, c, kernel)
        self.scale = nn.Parameter(torch.ones(1, c, h - kernel + 1, w - kernel + 1))
        self.shift = nn.Parameter(torch.zeros(1, c, h - kernel + 1, w - kernel + 1))
        self.dec = nn.ConvTranspose2d(c, c, kernel)

    def forward(self, bases: torch.Tensor) -> torch.Tensor:
        return self.dec(self.scale * self.enc(bases) + self.shift)


class HallucinatedBases(Factorization):
    """HaBa's factors: ``per_basis`` images per basis, one from each hallucinator.

    ``bases`` are ``[num_classes * ipc, C, H, W]``, classes in order. The
    expansion is class-major, then basis, then hallucinator: image
    ``b * len(hallucinators) + j`` of a class is hallucinator j applied to its
    basis b.
    """

    def __init__(self, num_classes: int, ipc: int, image_shape: Shape, hallucinators: int, kernel: int) -> None:
        super().__init__(num_classes, ipc * hallucinators, image_shape)
        self.ipc = ipc
        self.bases = nn.Parameter(torch.zeros(num_classes * ipc, *self.image_shape))
        self.hallucinators = nn.ModuleList(Hallucinator(self.image_shape, kernel) for _ in range(hallucinators))

    def hallucinate(self, rows: torch.Tensor, which: int) -> torch.Tensor:
        """Hallucinator ``which`` applied to the bases ``rows``."""
        return self.hallucinators[which](self.bases[rows])

    def basis_labels(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The class of every basis."""
        return torch.arange(self.num_classes, device=device).repeat_interleave(self.ipc)

    def expand(self) -> torch.Tensor:
        images = torch.stack([h(self.bases) for h in self.hallucinators], dim=1)
        return images.flatten(0, 1)


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """The supervised contrastive loss L^sup_out of Khosla et al. (NeurIPS 2020, eq. 2), every view an anchor.

    ``features`` are L2-normalised ``[N, D]`` embeddings (all views stacked),
    ``labels`` their ``[N]`` classes; each anchor's positives are the other
    embeddings of its class. (The released loss also scales by
    temperature / base_temperature, which HaBa sets equal.)
    """
    logits = features @ features.T / temperature
    self_pairs = torch.eye(len(features), dtype=torch.bool, device=features.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_pairs
    per_anchor = log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1).clamp(min=1)
    return -per_anchor.mean()


def pair_similarity(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the two halves of ``[2n, D]`` embeddings, pair by pair (``[n]``)."""
    first, second = embeddings.chunk(2)
    return F.cosine_similarity(first, second, dim=1)


@DISTILLERS.register("haba")
@dataclass(frozen=True)
class HaBa(FactorizedDistiller, PreparedDistiller):
    """HaBa (Liu et al., NeurIPS 2022) on MTT; defaults are the released CIFAR-10 IPC 10 command.

    ``run_cifar10_ipc10_style5.sh`` and ``distill_fac.py``'s defaults:
    |H| = ``hallucinators`` 5 (kernel 3), ``iterations`` 15000, N =
    ``syn_steps`` 30, M = ``expert_epochs`` 2, T+ = ``max_start_epoch`` 20,
    step size alpha from ``lr_teacher`` 0.001 learned by SGD (``lr_lr`` 1e-5,
    momentum 0.9, kept >= 0.001 or ``lr_teacher`` if lower), bases by SGD
    (``lr_img`` 100, momentum 0.95) from random real images, hallucinators by
    SGD (``lr_hallucinator`` 100, momentum 0.95), every basis in every student
    step (``batch_syn`` None), DSA on every hallucinated batch. The
    constraint: ``diversity_weight`` 0.1 (the released ``lambda_club_content``);
    the adversary (a ConvNet of the student's ``width``/``depth``/``norm``)
    by SGD (``adversary_lr`` 0.001, momentum 0.9) on ``class_weight`` 1 x
    cross-entropy + ``similarity_weight`` 0.1 x (1 - cos)/2 + ``contrast_weight``
    0.1 x the supervised contrastive loss at ``temperature`` 0.07. Experts
    (README ``buffer.py`` command): 100 ConvNets trained 50 epochs by SGD
    (lr 0.01, no momentum or weight decay) in batches of 256 with DSA -- the
    preparation is MTT's (:meth:`MTT.prepare`). ``presets`` hold the IPC 1 /
    10 / 50 commands. All three distil ZCA-whitened CIFAR-10 (``--zca``):
    ``lr_img`` 100 is a step in whitened pixel space (the pipeline's ``data``
    ZCA setting); on per-channel-normalised pixels MTT's own un-whitened runs
    use 1000 (see :class:`MTT`).

    **Storage**: ``ipc`` is the number of bases per class (the released
    ``--ipc``), and the hallucinators are stored on top of them, so the
    summary exceeds ``ipc`` images per class by the hallucinators'
    parameters: 5 x 5,568 = 27,840 numbers on CIFAR-10, +90.6% at ipc 1,
    +9.1% at ipc 10, +1.8% at ipc 50 (``Summary.storage`` reports it).

    ``Summary.history`` holds the minimised objective (eq. 1 plus the weighted
    dissimilarity term) of every iteration; ``Summary.learned_lr`` the final
    alpha. A checkpoint of :meth:`distill_prepared` holds the bases, the
    hallucinators, alpha, the adversary, the four SGD momenta, the
    generator's state and the history.
    """

    name: ClassVar[str] = "haba"
    iterative: ClassVar[bool] = True
    prepare_fields: ClassVar[tuple[str, ...]] = MTT.prepare_fields
    prepare_placeholders: ClassVar[Mapping[str, Any]] = {"max_start_epoch": 1, "expert_epochs": 1}
    presets: ClassVar[dict] = {
        preset_name("cifar10", 1): {"syn_steps": 50, "max_start_epoch": 2, "lr_lr": 1e-7, "lr_teacher": 0.01},
        preset_name("cifar10", 10): {"syn_steps": 30, "max_start_epoch": 20, "lr_lr": 1e-5, "lr_teacher": 0.001},
        preset_name("cifar10", 50): {"syn_steps": 30, "max_start_epoch": 20, "lr_lr": 1e-5, "lr_teacher": 0.01},
    }
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=1000,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=5e-4,
        lr_decay=0.1,
        batch=256,
        augment="dsa",
        labels="hard",
        loss="ce",
        learned_lr=True,
        zca=True,
        source=(
            "HaBa released code: distill_fac.py (epoch_eval_train 1000, lr_net = the learned alpha, batch_train "
            "256, DSA) and utils.evaluate_synset (SGD momentum 0.9, weight decay 5e-4, lr x0.1 half way), README "
            "(--zca). Its 'style_translator' evaluation draws one random hallucinator per basis per epoch, so an "
            "epoch there is 1/|H| of an epoch over the expanded summary"
        ),
    )

    iterations: int = checked(15000, gt=0)
    syn_steps: int = checked(30, gt=0)
    expert_epochs: int = checked(2, gt=0)
    max_start_epoch: int = checked(20, gt=0)
    # NaN learning rates are let through on purpose, and reported as a divergence at the iteration where they bite
    lr_img: float = checked(100.0, gt=0, allow_nan=True)
    momentum_img: float = checked(0.95, ge=0, lt=1)
    lr_hallucinator: float = checked(100.0, gt=0, allow_nan=True)
    momentum_hallucinator: float = checked(0.95, ge=0, lt=1)
    lr_lr: float = checked(1e-5, gt=0, allow_nan=True)
    lr_teacher: float = checked(0.001, gt=0, allow_nan=True)
    batch_syn: int | None = checked(None, gt=0)
    init: str = checked("real", choices=INITS)
    dsa: str = checked(DEFAULT_STRATEGY, check=check_strategy)
    hallucinators: int = checked(5, ge=2)
    kernel: int = checked(3, gt=0)
    diversity_weight: float = checked(0.1, ge=0)
    adversary_lr: float = checked(0.001, gt=0)
    adversary_momentum: float = checked(0.9, ge=0, lt=1)
    class_weight: float = checked(1.0, ge=0)
    similarity_weight: float = checked(0.1, ge=0)
    contrast_weight: float = checked(0.1, ge=0)
    temperature: float = checked(0.07, gt=0)
    log_every: int = checked(10, gt=0)
    # -- experts (prepare_fields; MTT's preparation) --
    num_experts: int = checked(100, gt=0)
    expert_train_epochs: int = checked(50, gt=0)
    expert_lr: float = checked(0.01, gt=0, allow_nan=True)
    expert_momentum: float = checked(0.0, ge=0, lt=1)
    expert_weight_decay: float = checked(0.0, ge=0)
    expert_batch: int = checked(256, gt=0)
    expert_dsa: str = checked(DEFAULT_STRATEGY, check=check_strategy)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    norm: str = checked("instancenorm", choices=STUDENT_NORMS)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.experts()  # MTT's checks of the expert window (raised at config load, not after training experts)

    def experts(self) -> MTT:
        """The MTT whose preparation (expert trajectories) and student HaBa shares."""
        return MTT(**self.prepare_params(), max_start_epoch=self.max_start_epoch, expert_epochs=self.expert_epochs)

    def setting(self, field: str) -> str:
        return f"distill.methods.{self.name}.{field}"

    # ------------------------------------------------------------ factors
    def images_per_class(self, ipc: int) -> int:
        """``ipc`` bases per class, each hallucinated by every hallucinator."""
        return ipc * self.hallucinators

    def factorization(self, shape: Shape, num_classes: int, ipc: int, *, seed: int = 0) -> HallucinatedBases:
        if self.kernel > min(shape[1:]):
            raise ConfigError(
                f"haba: kernel={self.kernel} is larger than the {shape[1]}x{shape[2]} images; "
                f"lower {self.setting('kernel')}"
            )
        return seeded_build(lambda: HallucinatedBases(num_classes, ipc, shape, self.hallucinators, self.kernel), seed)

    # -------------------------------------------------------------- experts
    def prepare(
        self, train: ImageData, *, seed: int, device: torch.device, progress: Progress = null_progress
    ) -> Trajectories:
        """MTT's expert trajectories (:meth:`MTT.prepare`) with this method's expert settings."""
        return self.experts().prepare(train, seed=seed, device=device, progress=progress)

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

    # ----------------------------------------------------------- objective
    def adversary_loss(self, adversary: ConvNet, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The adversary's loss on ``images`` = two hallucinations of the same bases stacked (``[2n, ...]``).

        Classify every hallucination, pull the two of a basis together
        ((1 - cos) / 2) and contrast all of them by class (:func:`supervised_contrastive`).
        """
        embeddings = adversary.embed(images)
        pairs = torch.cat([labels, labels])
        loss = self.class_weight * F.cross_entropy(adversary.classifier(embeddings), pairs)
        loss = loss + self.similarity_weight * ((1 - pair_similarity(embeddings)) / 2).mean()
        normalised = F.normalize(embeddings, dim=1)
        return loss + self.contrast_weight * supervised_contrastive(normalised, pairs, self.temperature)

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
        """One HaBa iteration of the released ``distill_fac.py`` per outer iteration.

        Draws an expert and a start epoch (MTT Algorithm 1); unrolls
        ``syn_steps`` student steps, each on one random hallucinator applied
        to a chunk of the bases (reshuffled and split into ``batch_syn``
        chunks when used up, as MTT's code does); adds ``diversity_weight`` x
        the adversary's mean (1 + cos) / 2 between two different
        hallucinations of a chunk of bases; takes one SGD step on bases,
        hallucinators and alpha; then one SGD step of the adversary on
        another chunk (:meth:`adversary_loss`). All randomness comes from one
        CPU generator seeded with ``seed``; the loop resumes from and saves
        into ``checkpoint`` (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        check_ipc(train, ipc)
        experts = self.experts()
        student = experts.student(train, device)
        trajectories = experts.check_trajectories(prepared, student)
        generator = torch.Generator().manual_seed(seed)
        memory = self.factorization(train.shape, train.num_classes, ipc, seed=draw_seed(generator))
        with torch.no_grad():
            memory.bases.copy_(initial_images(train, ipc, self.init, generator, torch.device("cpu")))
        memory = memory.to(device)
        adversary = seeded_convnet(
            train, draw_seed(generator), device, width=self.width, depth=self.depth, norm=self.norm
        ).requires_grad_(True)
        lr = torch.tensor(float(self.lr_teacher), device=device, requires_grad=True)
        learned = [memory.bases, *memory.hallucinators.parameters(), lr]
        optimizers = [
            torch.optim.SGD([memory.bases], lr=self.lr_img, momentum=self.momentum_img),
            torch.optim.SGD(memory.hallucinators.parameters(), lr=self.lr_hallucinator,
                            momentum=self.momentum_hallucinator),
            torch.optim.SGD([lr], lr=self.lr_lr, momentum=0.9),
        ]
        adversary_optimizer = torch.optim.SGD(adversary.parameters(), lr=self.adversary_lr,
                                              momentum=self.adversary_momentum)
        augment = DSA(strategy=self.dsa, per_sample=True)
        labels = memory.basis_labels(device)
        n = len(labels)
        batch = n if self.batch_syn is None else min(self.batch_syn, n)
        min_lr = min(_MIN_LR, self.lr_teacher)
        history: list[float] = []
        tensors = {**memory.stored_tensors(), "lr": lr}
        tensors.update({f"adversary.{name}": p for name, p in adversary.named_parameters()})
        loop = Loop(self.name, tensors=tensors, optimizers=[*optimizers, adversary_optimizer],
                    generators=[generator], history=history)

        def pair() -> tuple[int, int]:
            first, second = torch.randperm(self.hallucinators, generator=generator)[:2].tolist()
            return first, second

        for it in loop.range(self.iterations, checkpoint):
            expert = trajectories[int(torch.randint(0, len(trajectories), (), generator=generator))]
            t = int(torch.randint(0, self.max_start_epoch, (), generator=generator))
            start, target = expert[t].to(device), expert[t + self.expert_epochs].to(device)
            chunks: list[torch.Tensor] = []

            def take() -> torch.Tensor:
                if not chunks:
                    chunks.extend(torch.randperm(n, generator=generator).split(batch))
                return chunks.pop().to(device)

            theta = start.detach().requires_grad_(True)
            for _ in range(self.syn_steps):
                rows = take()
                which = int(torch.randint(0, self.hallucinators, (), generator=generator))
                images = augment(memory.hallucinate(rows, which), draw_seed(generator))
                (grad,) = torch.autograd.grad(student.loss(theta, images, labels[rows]), theta, create_graph=True)
                theta = theta - lr * grad
            matching = trajectory_distance(theta, start, target)

            rows, (first, second) = take(), pair()
            both = torch.cat([memory.hallucinate(rows, first), memory.hallucinate(rows, second)])
            similarity = pair_similarity(adversary.embed(augment(both, draw_seed(generator))))
            objective = matching + self.diversity_weight * ((similarity + 1) / 2).mean()
            value = check_finite(objective.item(), method=self.name, iteration=it, setting=self.blame(memory))
            # a hallucinator no step drew gets no gradient, and SGD then leaves it (and its momentum) alone
            for tensor, grad in zip(learned, torch.autograd.grad(objective, learned, allow_unused=True)):
                tensor.grad = grad
            for optimizer in optimizers:
                optimizer.step()
            with torch.no_grad():
                lr.clamp_(min=min_lr)
            if not torch.isfinite(lr):
                check_finite(float("nan"), method=self.name, iteration=it, setting=self.setting("lr_lr"))

            rows, (first, second) = take(), pair()
            with torch.no_grad():
                both = torch.cat([memory.hallucinate(rows, first), memory.hallucinate(rows, second)])
                both = augment(both, draw_seed(generator))
            adversary_optimizer.zero_grad(set_to_none=True)
            self.adversary_loss(adversary, both, labels[rows]).backward()
            adversary_optimizer.step()

            history.append(value)
            if it % self.log_every == 0 or it == self.iterations:
                progress(it, self.iterations, loss=value, syn_lr=float(lr.detach()))

        return factorized_summary(train, memory, self.name, history, learned_lr=float(lr.detach()),
                                  setting=self.setting("lr_img"))

    def blame(self, memory: HallucinatedBases) -> str:
        """The setting(s) to lower when the objective is not finite: the step size of what blew up."""
        if not torch.isfinite(memory.bases).all():
            return self.setting("lr_img")
        if not all(torch.isfinite(p).all() for p in memory.hallucinators.parameters()):
            return self.setting("lr_hallucinator")
        return f"{self.setting('lr_img')} or {self.setting('lr_lr')}"
