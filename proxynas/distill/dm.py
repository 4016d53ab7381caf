"""Distribution Matching (DM).

Zhao & Bilen, "Dataset Condensation with Distribution Matching" (WACV 2023).
Synthetic images S are learned so that, under many randomly initialised
embedders psi_theta and siamese augmentations A(., omega), each class's mean
synthetic embedding matches its mean real embedding (eq. 4). No network is
trained, which makes DM the cheapest of the synthetic-set methods.

``networks: space`` (a deliberate deviation from the paper, off by default)
draws the embedders from the search space being ranked instead of the fixed
ConvNet, because summaries tuned to one architecture transfer poorly (DC-Bench,
Cui et al., NeurIPS 2022); see :mod:`proxynas.distill.networks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import torch

from proxynas.augment import DEFAULT_STRATEGY, DSA, check_strategy
from proxynas.data.types import ImageData
from proxynas.distill.base import (
    INITS,
    DISTILLERS,
    Distiller,
    EvaluationProtocol,
    Summary,
    check_finite,
    check_ipc,
    class_indices,
    descend,
    initial_images,
    make_summary,
    preset_name,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.distill.networks import NETWORKS, draw_network, require_space
from proxynas.fields import checked
from proxynas.numerics import draw_seed
from proxynas.progress import Progress, null_progress

if TYPE_CHECKING:
    from proxynas.spaces.base import SearchSpace

SETTING = "distill.methods.dm.lr_img"  # what to lower when the objective diverges
#: real images embedded at once when a whole class is (``batch_real: None``)
REAL_EMBED_CHUNK = 1024


@DISTILLERS.register("dm")
@dataclass(frozen=True)
class DM(Distiller):
    """Distribution Matching (Zhao & Bilen, WACV 2023, eq. 4); defaults are the paper's.

    The released ``main_DM.py`` CIFAR-10 settings (the same at ipc 1, 10 and
    50, README: ``--lr_img 1``): 20000 iterations, SGD on the images with
    lr 1.0 and momentum 0.5, 256 real images per class, initialisation from
    random real images, DSA strategy ``color_crop_cutout_flip_scale_rotate``
    and random ConvNet-3 embedders of width 128.

    ``width``/``depth`` size the random ConvNet embedders (smaller is faster
    on a CPU). ``dsa`` is the :class:`DSA` strategy (``"none"`` disables
    augmentation). Progress is reported every ``log_every`` iterations;
    ``Summary.history`` holds the objective of every iteration.

    ``networks`` says where the embedders come from: ``"convnet"`` (the
    paper's random ConvNets) or ``"space"``, a fresh random cell of the search
    space being ranked at every iteration, built as candidates are (with their
    batch norm, in train mode); ``width``/``depth`` are then unused and
    :meth:`distill` must be given ``space=``. This is a deliberate deviation
    from the paper: a summary matched through one architecture is tuned to it
    and transfers poorly to others (DC-Bench, Cui et al., NeurIPS 2022).
    A batch-norm cell's embedding can move with the images far faster than
    the instance-norm ConvNet's (on 8x8 test images its gradients are 10-100x
    larger), so ``lr_img`` may need lowering with ``networks: space``.

    A checkpoint holds the images, the SGD momentum, the generator's state
    and the history (each iteration's embedder is drawn afresh from the
    generator, so nothing else carries over).
    """

    name: ClassVar[str] = "dm"
    iterative: ClassVar[bool] = True
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        preset_name("cifar10", ipc): {"iterations": 20000, "lr_img": 1.0, "batch_real": 256, "init": "real",
                                      "dsa": DEFAULT_STRATEGY, "width": 128, "depth": 3}
        for ipc in (1, 10, 50)
    }
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=1000,
        augment="dsa",
        source=(
            "DM released main_DM.py + utils.evaluate_synset (Zhao & Bilen WACV 2023, Tab. 1): epoch_eval_train 1000"
            " with DSA color_crop_cutout_flip_scale_rotate, SGD lr 0.01 momentum 0.9 wd 5e-4, batch 256, lr x0.1"
            " half way"
        ),
    )

    iterations: int = checked(20000, gt=0)
    # a NaN learning rate is let through on purpose, and reported as a
    # divergence at the iteration where it bites
    lr_img: float = checked(1.0, gt=0, allow_nan=True)
    momentum: float = checked(0.5, ge=0, lt=1)
    # None: every real image of the class at every iteration (KFS's full batch)
    batch_real: int | None = checked(256, gt=0)
    init: str = checked("real", choices=INITS)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    dsa: str = checked(DEFAULT_STRATEGY, check=check_strategy)
    log_every: int = checked(10, gt=0)
    networks: str = checked("convnet", choices=NETWORKS)

    @property
    def needs_space(self) -> bool:
        """True with ``networks: space``: :meth:`distill` then needs ``space=``."""
        return self.networks == "space"

    @property
    def augment(self) -> DSA:
        """The siamese augmentation A(., omega) of eq. 4 (Zhao & Bilen 2021 DSA)."""
        return DSA(strategy=self.dsa)

    def iteration_loss(
        self,
        embed: Callable[[torch.Tensor], torch.Tensor],
        real_x: torch.Tensor,
        indices: Sequence[torch.Tensor],
        syn: torch.Tensor,
        per_class: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """:meth:`objective` on one iteration's batches: per class, up to ``batch_real`` real images
        (indices into ``real_x``, on its device) and the class's ``per_class`` rows of ``syn``, both
        augmented with one DSA draw (siamese); every draw comes from ``generator``, class by class.
        """
        augment = self.augment
        real, fake = [], []
        for k, idx in enumerate(indices):
            pick = torch.randperm(len(idx), generator=generator)[: self.batch_real]
            aug_seed = draw_seed(generator)
            real.append(augment(real_x[idx[pick.to(idx.device)]], aug_seed))
            fake.append(augment(syn[k * per_class : (k + 1) * per_class], aug_seed))
        # a whole class (batch_real None) can be thousands of images: embedded in pieces, which is
        # exact for the ConvNet's per-sample (instance) norm; a batch-norm embedder keeps one batch
        chunk = REAL_EMBED_CHUNK if self.batch_real is None and self.networks == "convnet" else None
        return self.objective(embed, real, fake, real_chunk=chunk)

    def objective(
        self,
        embed: Callable[[torch.Tensor], torch.Tensor],
        real: Sequence[torch.Tensor],
        syn: Sequence[torch.Tensor],
        *,
        real_chunk: int | None = None,
    ) -> torch.Tensor:
        """DM eq. 4 for one theta: sum_c || mean_{x in T_c} psi(x) - mean_{s in S_c} psi(s) ||^2.

        ``real[c]`` / ``syn[c]`` are class c's (already augmented) batches. All
        classes go through ``embed`` in one batch each, which is exact because
        the ConvNet's instance norm makes every embedding per-sample. Real
        embeddings are constants of the objective, so they carry no graph.

        With a batch-norm embedder (``networks: space``) the one batch per side
        is what DM's released code does for BN models
        (github.com/VICO-UoE/DatasetCondensation): the BN statistics are taken
        over all classes' real images, and over all synthetic images, rather
        than per class. ``real_chunk``: embed the real images that many at a
        time (only for per-sample embedders; a whole class of CIFAR-10 at once
        would take tens of GB).
        """
        with torch.no_grad():
            joined = torch.cat(list(real))
            pieces = [joined] if real_chunk is None else joined.split(real_chunk)
            real_feat = torch.cat([embed(piece) for piece in pieces]).split([len(r) for r in real])
        syn_feat = embed(torch.cat(list(syn))).split([len(s) for s in syn])
        return sum(((r.mean(0) - s.mean(0)) ** 2).sum() for r, s in zip(real_feat, syn_feat))

    def initial_images(
        self, train: ImageData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """S at step 0 (DM experimental settings): ``init`` images per class (:func:`initial_images`)."""
        return initial_images(train, ipc, self.init, generator, device)

    def distill(
        self,
        train: ImageData,
        ipc: int,
        *,
        seed: int,
        device: torch.device,
        progress: Progress = null_progress,
        space: "SearchSpace | None" = None,
        checkpoint: Checkpoint | None = None,
    ) -> Summary:
        """Minimise DM eq. 4 over S by SGD (lr ``lr_img``, momentum ``momentum``; DM experimental settings).

        Each iteration draws a fresh theta (a seeded random ConvNet), a real
        batch of up to ``batch_real`` images per class, and one DSA seed per
        class shared by that class's real and synthetic batch (siamese). All
        randomness comes from one CPU generator seeded with ``seed``.

        With ``networks: space`` theta is instead a random cell of ``space``
        drawn from that generator's seed (:func:`draw_network`); without
        ``space`` that raises :class:`ConfigError`.

        The loop resumes from and saves into ``checkpoint``
        (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        require_space(self.name, self.networks, space)
        check_ipc(train, ipc)
        generator = torch.Generator().manual_seed(seed)
        syn = self.initial_images(train, ipc, generator, device).requires_grad_(True)
        optimizer = torch.optim.SGD([syn], lr=self.lr_img, momentum=self.momentum)
        real_x = train.x.to(device, torch.float32)
        indices = [idx.to(device) for idx in class_indices(train)]
        history: list[float] = []
        drawn_from = space if self.networks == "space" else None
        loop = Loop(self.name, tensors={"syn": syn}, optimizers=[optimizer], generators=[generator],
                    history=history)

        for it in loop.range(self.iterations, checkpoint):
            net_seed = draw_seed(generator)
            # space=None draws the paper's ConvNet (seeded_convnet), exactly as before the setting existed
            net = draw_network(train, net_seed, device, space=drawn_from, width=self.width, depth=self.depth)
            loss = self.iteration_loss(net.embed, real_x, indices, syn, ipc, generator)
            descend(optimizer, loss, history, method=self.name, iteration=it, iterations=self.iterations,
                    setting=SETTING, progress=progress, log_every=self.log_every)

        # The last step can itself overflow even though its loss was finite.
        if not torch.isfinite(syn).all():
            check_finite(float("nan"), method=self.name, iteration=self.iterations, setting=SETTING)
        per_class = syn.detach().split(ipc)
        return make_summary(train, per_class, self.name, history)
