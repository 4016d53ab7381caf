"""CAFE: Condense dataset by Aligning FEatures.

Wang, Zhao, Peng, Zhu, Yang, Wang, Huang, Bilen, Wang & You, "CAFE: Learning to
Condense Dataset by Aligning Features" (CVPR 2022); released code
github.com/kaiwang960112/CAFE (``distill.py``, ``networks.py``, ``utils.py``).

Synthetic images S are learned through a network theta that is itself trained
on S (a bi-level optimisation), with two losses on a real batch T and S:

* layer-wise feature alignment (paper Sec. 3.2, the equation of L_f): at
  every layer l of the network and for every class k, the mean feature of the
  real images of class k should equal that of the synthetic ones,
  ``L_f = sum_l w_l sum_k || mean f_l(T_k) - mean f_l(S_k) ||^2``
  (:func:`feature_alignment`);
* the discrimination loss (Sec. 3.3, the equations of O, p and L_d): the mean
  last-layer features of the synthetic images of each class are class centres
  P_k, the logits of real image i are its inner products with them,
  ``O_i = <F(x_i), P>``, and ``L_d = sum_i CE(softmax(O_i), y_i)``
  (:func:`discrimination_loss`).

The images descend the paper's total loss ``L_total = L_f + beta * L_d``.
Between two image updates the network trains on S (the inner loop); the
*dynamic* bi-level optimisation
(Sec. 3.4) sizes both loops by watching the network's accuracy on real
images (:class:`AccuracyWatch`): the image updates on one network stop once
that accuracy has settled, and each network update stops once it has moved.

Equations are cited by their symbols; the released code fixes what the paper
leaves open (layer weights, sum reductions, beta, the stopping thresholds),
and :class:`CAFE` follows it, saying where.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F

from proxynas.augment import DSA, check_strategy
from proxynas.data.types import ImageData
from proxynas.distill.base import (
    DISTILLERS,
    INITS,
    Distiller,
    EvaluationProtocol,
    Summary,
    check_finite,
    check_ipc,
    class_indices,
    finish_summary,
    initial_images,
    seeded_convnet,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.distill.gradient_matching import epoch_batches
from proxynas.errors import DivergenceError
from proxynas.fields import checked
from proxynas.models import ConvNet
from proxynas.numerics import draw_seed
from proxynas.progress import Progress, null_progress

__all__ = [
    "CAFE",
    "AccuracyWatch",
    "aligned_features",
    "class_means",
    "discrimination_loss",
    "feature_alignment",
]

# A ConvNet block is conv, norm, act[, pool] (proxynas.models.convnet): index of its activation.
_ACTIVATION = 2


def aligned_features(net: ConvNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The features CAFE aligns: each block's activation (before its pool), then the network's output map.

    As the released ``networks.ConvNet.forward`` (its ``f1..f4``): for the
    ConvNet-3 on 32x32 images, ``[N, w, 32, 32]``, ``[N, w, 16, 16]``,
    ``[N, w, 8, 8]`` and the pooled ``[N, w, 4, 4]`` whose flattening is
    :meth:`ConvNet.embed`. ``depth + 1`` tensors.
    """
    feats, start, out = [], 0, x
    for end in net.block_ends:
        for offset, layer in enumerate(net.features[start:end]):
            out = layer(out)
            if offset == _ACTIVATION:
                feats.append(out)
        start = end
    feats.append(out)
    return feats


def class_means(features: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """``[K, ...]``: the mean of each class's rows of ``features`` (classes in order, ``sizes[k]`` rows each)."""
    return torch.stack([part.mean(0) for part in features.split(list(sizes))])


def feature_alignment(
    real_means: Sequence[torch.Tensor], syn_means: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """CAFE's L_f (Sec. 3.2): ``sum_l weights[l] * sum_k || real_means[l][k] - syn_means[l][k] ||^2``.

    ``real_means[l]`` / ``syn_means[l]`` are layer l's per-class mean features
    (:func:`class_means`). The squared error is summed over classes and
    elements (the released ``criterion_middle``, ``MSELoss(reduction='sum')``);
    the per-layer weights are the released code's (see :class:`CAFE`).
    """
    if not (len(real_means) == len(syn_means) == len(weights)):
        raise ValueError(
            f"got {len(real_means)} real and {len(syn_means)} synthetic layers for {len(weights)} weights"
        )
    terms = [w * (r - s).pow(2).sum() for w, r, s in zip(weights, real_means, syn_means)]
    return torch.stack(terms).sum()


def discrimination_loss(real: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """CAFE's L_d (Sec. 3.3), summed over the real images (the released ``criterion_sum``).

    ``real`` ``[N, D]`` are the real images' last-layer features, ``labels``
    ``[N]`` their classes, ``centres`` ``[K, D]`` the synthetic class centres
    P (each class's mean synthetic feature). The logits are the inner products
    ``O = real @ centres.T`` and the loss is the cross-entropy of their
    softmax against the labels. The paper averages over the N images; the
    released code sums, with its weight beta = 0.01 applied to the sum.
    """
    return F.cross_entropy(real @ centres.T, labels, reduction="sum")


class AccuracyWatch:
    """The released code's stopping rule of one loop: the spread of the last ``window`` accuracy readings.

    Each reading is the network's accuracy on real images, class by class;
    :meth:`read` records ``(previous + sum_k acc_k) / K``, the released code's
    running value (``acc_test += ...; acc_test /= num_classes``, never reset
    between readings of one loop, so it is the mean class accuracy plus a
    K-th of the previous value). :meth:`spread` is ``max - min`` of the last
    ``window`` values once there are that many, else ``None``.
    """

    def __init__(self, window: int, num_classes: int) -> None:
        self.window = window
        self.num_classes = num_classes
        self.value = 0.0
        self.values: list[float] = []

    def read(self, class_accuracies: Sequence[float]) -> float:
        """Record one reading (one accuracy per class) and return the watched value."""
        self.value = (self.value + sum(class_accuracies)) / self.num_classes
        self.values = (self.values + [self.value])[-self.window :]
        return self.value

    def spread(self) -> float | None:
        """``max - min`` of the last ``window`` values, or None before ``window`` readings."""
        if len(self.values) < self.window:
            return None
        return max(self.values) - min(self.values)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_weights(weights: tuple[float, ...]) -> None:
    if len(weights) == 0 or any(not _is_number(w) or not w >= 0 for w in weights):
        raise ValueError(f"layer_weights must be a non-empty list of numbers >= 0, got {weights!r}")


def _check_fractions(fractions: tuple[float, ...]) -> None:
    if any(not _is_number(f) or not 0 < f <= 1 for f in fractions):
        raise ValueError(f"lr_halved_at must hold fractions of iterations in (0, 1], got {fractions!r}")


@DISTILLERS.register("cafe")
@dataclass(frozen=True)
class CAFE(Distiller):
    """CAFE (Wang et al., CVPR 2022); defaults are the released code's for CIFAR-10 (``distill.py``).

    Settings, with the released defaults:

    * ``iterations``: networks drawn, one per outer iteration (``--Iteration``
      2000; the released loop runs ``range(Iteration + 1)``, one more);
    * ``lr_img`` / ``momentum_img``: SGD on the images (0.1 / 0.5), the
      learning rate halved after each fraction of ``iterations`` in
      ``lr_halved_at`` (the released ``adjust_learning_rate`` halves it at
      iterations 1200, 1600 and 1800 of 2000);
    * ``lr_net``: plain SGD training the network on S (0.01), in mini-batches
      of ``batch_train`` (256) images, one epoch per inner step;
    * ``batch_real``: real images per class per image update (256);
    * ``init``: ``"noise"`` (N(0, 1) in normalised space, the released
      default) or ``"real"``;
    * ``width`` / ``depth``: the ConvNet (128 / 3, instance norm);
    * ``layer_weights``: w_l of :func:`feature_alignment`, one per feature of
      :func:`aligned_features` (``depth + 1`` values, input side first). The
      released 0.1 / 0.1 / 1.0 (``fourth/third/second_weight``) on the three
      block activations and 2.0 on the output map: ``first_weight`` 1.0 plus
      the unweighted alignment of its flattened copy that the released code
      adds with the discrimination loss (``loss_output``);
    * ``beta``: the discrimination loss's weight (``inner_weight`` 0.01, on
      the loss summed over the real images);
    * ``window`` / ``outer_spread`` / ``inner_spread``: the dynamic bi-level
      optimisation (Sec. 3.4). After each image update the network's accuracy
      on ``query_per_class`` (128) fresh real images per class is read
      (:class:`AccuracyWatch`); the image updates on this network end once
      the last ``window`` (10) readings span less than ``outer_spread``
      (``lambda_1`` 0.04). Otherwise the network trains on S epoch by epoch,
      read after each, until the last ``window`` readings span more than
      ``inner_spread`` (``lambda_2`` 0.03);
    * ``max_match_steps`` / ``max_net_epochs``: caps on those two loops, a
      deliberate deviation for bounded runs; ``None`` (the default) leaves
      them unbounded, as released. An uncapped inner loop never ends on data
      where the network's accuracy stops moving (e.g. a network at 100%);
    * ``dsa``: the DSA strategy, ``"none"`` as released by default (CAFE);
      ``"color_crop_cutout_flip_scale_rotate"`` is the paper's CAFE+DSA:
      each class's real and synthetic batch share one omega and the network
      trains on S with one omega per image (``--method DSA``);
    * ``log_every``: progress is reported every that many iterations.

    The objective omits the released code's cross-entropy of the real batch
    (``loss_real``), which does not depend on S. ``Summary.history`` holds,
    per iteration, ``L_f + beta * L_d`` averaged over its image updates.

    ``presets`` are the released code's CIFAR-10 runs (README ``--ipc 10`` /
    ``--ipc 50``, same settings at every ipc): the defaults. ``paper_protocol``
    is the released evaluation of CAFE without DSA (``utils.evaluate_synset``
    via ``distill.py``); CAFE+DSA's evaluation trains 1000 epochs with DSA
    (``dsa_protocol``, what :meth:`evaluation_protocol` returns when ``dsa`` is set).

    A checkpoint (between iterations) holds the images, their SGD momentum,
    the generator's state and the history: each iteration's network, its
    optimiser and both watches start afresh.
    """

    name: ClassVar[str] = "cafe"
    iterative: ClassVar[bool] = True
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "cifar10-ipc1": {},
        "cifar10-ipc10": {},
        "cifar10-ipc50": {},
    }
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=600,
        augment="none",
        source=(
            "CAFE released code (github.com/kaiwang960112/CAFE): utils.evaluate_synset called from distill.py "
            "without DSA -- 600 epochs (range(Epoch+1) runs 601), SGD lr 0.01 momentum 0.9 wd 5e-4, "
            "lr x0.1 at epoch 301, batch 256, no augmentation (get_daparam: 'none' for CIFAR-10 ConvNet)"
        ),
    )

    #: the released evaluation of CAFE+DSA (``dsa`` set): 1000 epochs with DSA, one omega per image
    dsa_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=1000,
        augment="dsa",
        source=(
            "CAFE released code: utils.evaluate_synset called from distill.py with --method DSA -- 1000 epochs, "
            "SGD lr 0.01 momentum 0.9 wd 5e-4, lr x0.1 half way, batch 256, DSA augmentation"
        ),
    )

    iterations: int = checked(2000, gt=0)
    # NaN learning rates are let through on purpose, and reported as a
    # divergence at the iteration where they bite
    lr_img: float = checked(0.1, gt=0, allow_nan=True)
    momentum_img: float = checked(0.5, ge=0, lt=1)
    lr_halved_at: tuple[float, ...] = checked((0.6, 0.8, 0.9), check=_check_fractions)
    lr_net: float = checked(0.01, gt=0, allow_nan=True)
    batch_real: int = checked(256, gt=0)
    batch_train: int = checked(256, gt=0)
    init: str = checked("noise", choices=INITS)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    layer_weights: tuple[float, ...] = checked((0.1, 0.1, 1.0, 2.0), check=_check_weights)
    beta: float = checked(0.01, ge=0)
    window: int = checked(10, gt=0)
    outer_spread: float = checked(0.04, ge=0)
    inner_spread: float = checked(0.03, ge=0)
    query_per_class: int = checked(128, gt=0)
    max_match_steps: int | None = checked(None, gt=0)
    max_net_epochs: int | None = checked(None, gt=0)
    dsa: str = checked("none", check=check_strategy)
    log_every: int = checked(10, gt=0)

    def evaluation_protocol(self, preset: str | None = None) -> EvaluationProtocol:
        """CAFE's released evaluation, or CAFE+DSA's when ``dsa`` is set (the same at every preset)."""
        return type(self).paper_protocol if self.dsa == "none" else type(self).dsa_protocol

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.layer_weights) != self.depth + 1:
            raise ValueError(
                f"layer_weights needs depth + 1 = {self.depth + 1} values (one per block and the output), "
                f"got {len(self.layer_weights)}"
            )

    def setting(self, field: str) -> str:
        """Dotted config path of one of this method's settings (for error messages)."""
        return f"distill.methods.{self.name}.{field}"

    @property
    def augment(self) -> DSA:
        """Siamese A(., omega) of each class's real and synthetic batch (one omega per class)."""
        return DSA(strategy=self.dsa)

    @property
    def net_augment(self) -> DSA:
        """Augmentation when training the network on S: one omega per image (DSA paper)."""
        return DSA(strategy=self.dsa, per_sample=True)

    def lr_at(self, iteration: int) -> float:
        """The images' learning rate at 1-based ``iteration``: ``lr_img`` halved after each milestone."""
        passed = sum(iteration > round(f * self.iterations) for f in self.lr_halved_at)
        return self.lr_img * 0.5**passed

    def objective(
        self, net: ConvNet, real: Sequence[torch.Tensor], syn: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_f, L_d)`` at ``net`` for class k's (augmented) real batch ``real[k]`` and synthetic ``syn[k]``.

        All classes go through ``net`` in one batch per side, which is exact
        because the ConvNet's instance norm makes every feature per-sample.
        Real features are constants of the objective, so they carry no graph.
        """
        real_sizes, syn_sizes = [len(r) for r in real], [len(s) for s in syn]
        with torch.no_grad():
            real_feats = aligned_features(net, torch.cat(list(real)))
        syn_feats = aligned_features(net, torch.cat(list(syn)))
        real_means = [class_means(f, real_sizes) for f in real_feats]
        syn_means = [class_means(f, syn_sizes) for f in syn_feats]
        align = feature_alignment(real_means, syn_means, self.layer_weights)
        labels = torch.arange(len(real), device=real_feats[-1].device).repeat_interleave(
            torch.tensor(real_sizes, device=real_feats[-1].device)
        )
        disc = discrimination_loss(real_feats[-1].flatten(1), labels, syn_means[-1].flatten(1))
        return align, disc

    def class_accuracies(
        self, net: ConvNet, real_x: torch.Tensor, indices: Sequence[torch.Tensor], generator: torch.Generator
    ) -> list[float]:
        """The network's accuracy on up to ``query_per_class`` random real images of each class.

        All classes go through ``net`` in one batch (exact: instance norm is per-sample).
        """
        picks = [idx[torch.randperm(len(idx), generator=generator)[: self.query_per_class].to(idx.device)]
                 for idx in indices]
        with torch.no_grad():
            predicted = net(real_x[torch.cat(picks)]).argmax(1).split([len(p) for p in picks])
        return [float((p == k).float().mean()) for k, p in enumerate(predicted)]

    def train_epoch(
        self,
        net: ConvNet,
        optimizer: torch.optim.Optimizer,
        syn_x: torch.Tensor,
        syn_y: torch.Tensor,
        generator: torch.Generator,
        iteration: int,
    ) -> None:
        """One epoch of cross-entropy SGD on S (shuffled batches of ``batch_train``; DSA per image if set)."""
        augment = self.net_augment
        for idx in epoch_batches(len(syn_x), self.batch_train, 1, generator):
            xb = syn_x[idx.to(syn_x.device)]
            if augment.parts:
                xb = augment(xb, draw_seed(generator))
            loss = F.cross_entropy(net(xb), syn_y[idx.to(syn_y.device)])
            if not torch.isfinite(loss):
                self._network_diverged(loss.item(), iteration)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
            self._network_diverged(float("nan"), iteration)

    def _network_diverged(self, value: float, iteration: int) -> None:
        raise DivergenceError(
            f"{self.name}: network training loss became {value} at iteration {iteration}; "
            f"lower {self.setting('lr_net')}"
        )

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
        """CAFE's dynamic bi-level optimisation (Sec. 3.4) of L_total, one random network per iteration.

        Per iteration: a fresh seeded ConvNet; then repeatedly an image update
        (per class, up to ``batch_real`` real images and one DSA seed shared
        by that class's real and synthetic batch; one SGD step on S), a reading
        of the outer watch, and, unless the outer loop ends there, network
        epochs on S, each followed by a reading of the inner watch (see
        :class:`CAFE`). As in the released code the network is not trained
        after the last image update of an iteration. All randomness comes
        from one CPU generator seeded with ``seed``.

        The loop resumes from and saves into ``checkpoint``, between
        iterations (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        check_ipc(train, ipc)
        generator = torch.Generator().manual_seed(seed)
        k = train.num_classes
        syn = initial_images(train, ipc, self.init, generator, device).requires_grad_(True)
        optimizer = torch.optim.SGD([syn], lr=self.lr_img, momentum=self.momentum_img)
        real_x = train.x.to(device, torch.float32)
        indices = [idx.to(device) for idx in class_indices(train)]
        syn_y = torch.arange(k, device=device).repeat_interleave(ipc)
        augment = self.augment
        history: list[float] = []
        lr_img = self.setting("lr_img")
        loop = Loop(self.name, tensors={"syn": syn}, optimizers=[optimizer], generators=[generator],
                    history=history)

        for it in loop.range(self.iterations, checkpoint):
            for group in optimizer.param_groups:
                group["lr"] = self.lr_at(it)
            net = seeded_convnet(train, draw_seed(generator), device, width=self.width, depth=self.depth)
            net.requires_grad_(True).train()
            net_optimizer = torch.optim.SGD(net.parameters(), lr=self.lr_net)
            outer = AccuracyWatch(self.window, k)
            losses: list[float] = []
            while True:
                real, fake = [], []
                for c, idx in enumerate(indices):
                    pick = torch.randperm(len(idx), generator=generator)[: self.batch_real]
                    aug_seed = draw_seed(generator)
                    real.append(augment(real_x[idx[pick.to(device)]], aug_seed))
                    fake.append(augment(syn[c * ipc : (c + 1) * ipc], aug_seed))
                align, disc = self.objective(net, real, fake)
                loss = align + self.beta * disc
                losses.append(check_finite(loss.item(), method=self.name, iteration=it, setting=lr_img))
                # Only the images are differentiated; the network keeps no .grad from the objective.
                (syn.grad,) = torch.autograd.grad(loss, [syn])
                optimizer.step()
                if not torch.isfinite(syn).all():
                    check_finite(float("nan"), method=self.name, iteration=it, setting=lr_img)
                outer.read(self.class_accuracies(net, real_x, indices, generator))
                spread = outer.spread()
                if spread is not None and spread < self.outer_spread:
                    break
                if self.max_match_steps is not None and len(losses) >= self.max_match_steps:
                    break
                inner = AccuracyWatch(self.window, k)
                syn_now = syn.detach()
                epochs = 0
                while True:
                    self.train_epoch(net, net_optimizer, syn_now, syn_y, generator, it)
                    epochs += 1
                    inner.read(self.class_accuracies(net, real_x, indices, generator))
                    spread = inner.spread()
                    if spread is not None and spread > self.inner_spread:
                        break
                    if self.max_net_epochs is not None and epochs >= self.max_net_epochs:
                        break
            history.append(sum(losses) / len(losses))
            if it % self.log_every == 0 or it == self.iterations:
                progress(it, self.iterations, loss=history[-1])

        return finish_summary(train, syn, ipc, self.name, history)
