"""Gradient matching: the machinery shared by DC, DSA, DCC and IDC.

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching" (ICLR
2021; "DC"). Synthetic images S are learned so that, along the training
trajectory of a network theta, the gradient of the training loss on S matches
the gradient on the real set T (eq. 9):

    min_S  E_{theta_0}  sum_{t < T}  sum_c  D( grad_theta L(S_c; theta_t), grad_theta L(T_c; theta_t) )

where theta_{t+1} = train(theta_t, S) (the "inner loop"). The layer-wise
distance D of eq. 10 sums, over every layer and every output node i of the
layer, ``1 - cos(A_i, B_i)`` between the real and synthetic gradients of that
node's incoming weights (:func:`gradient_distance`).

:class:`GradientMatching` is that outer/inner loop (Algorithm 1 of DC),
parameterised by small hooks so the variants are one module each and reuse
rather than copy it:

* DC / DSA (Zhao & Bilen, ICML 2021): siamese augmentation of both batches
  (:mod:`proxynas.distill.dc`);
* DCC / DSAC (Lee et al., ICML 2022): how the per-class gradients are
  combined before the distance, and which loss each step minimises (its
  warm-up) (:meth:`GradientMatching.objective`,
  :meth:`GradientMatching.step_loss`, :mod:`proxynas.distill.dcc`);
* IDC (Kim et al., ICML 2022): how stored parameters decode into images and
  how many, the step size on them, which networks are matched and how they
  are trained (:meth:`decode`, :meth:`images_per_class`, :meth:`image_lr`,
  :meth:`new_network`, :meth:`update_network`, :mod:`proxynas.distill.idc`).

Every variant can also match through random cells of the search space being
ranked instead of the papers' fixed ConvNet (``networks: space``, a
deliberate deviation, off by default): a summary matched through one
architecture is tuned to it and transfers poorly (DC-Bench, Cui et al.,
NeurIPS 2022). Those cells have batch norm, handled as in DC's released code
for BN models (github.com/VICO-UoE/DatasetCondensation): before each matching
step a real batch mixing all classes fixes the BN statistics, and the BN
layers stay in eval mode while the per-class gradients are computed
(:func:`proxynas.distill.networks.freeze_batchnorm`).

Names of the loops differ between the papers; here:

* ``iterations`` = K, the number of randomly initialised networks (DC's
  "Iteration"; IDC's outer iterations);
* ``match_steps`` = T, image updates per network (DC's "outer_loop", IDC's
  "inner_loop");
* the network update between two image updates (DC's "inner_loop" epochs on
  S; IDC's steps on real data) is each subclass's :meth:`update_network`.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from proxynas.augment import DSA, check_strategy
from proxynas.data.types import ImageData
from proxynas.distill.base import (
    INITS,
    Distiller,
    Summary,
    check_finite,
    check_ipc,
    class_indices,
    initial_images,
    make_summary,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.distill.networks import (
    BN_PER_CLASS,
    NETWORKS,
    draw_network,
    freeze_batchnorm,
    has_batchnorm,
    require_space,
)
from proxynas.errors import DivergenceError
from proxynas.fields import checked
from proxynas.numerics import draw_seed
from proxynas.progress import Progress, null_progress

if TYPE_CHECKING:
    from proxynas.spaces.base import SearchSpace

METRICS = ("cos", "mse", "l1")
_EPS = 1e-6  # DC's guard against a zero norm product in eq. 10, added as its released code does

Grads = Sequence[torch.Tensor]


def layer_distance(real: torch.Tensor, syn: torch.Tensor, metric: str = "cos") -> torch.Tensor:
    """Distance between one layer's real and synthetic gradients.

    ``"cos"`` is DC eq. 10: the gradient is viewed as one row per output node
    (a conv weight ``[out, in, kh, kw]`` as ``[out, in*kh*kw]``, a linear
    weight as ``[out, in]``, a 1-D tensor as a single row) and
    ``sum_i (1 - <A_i, B_i> / (|A_i| |B_i| + 1e-6))`` is returned, the 1e-6
    added as DC's released ``distance_wb`` does (a zero row gives 1; identical
    rows give ``1e-6 / (|A_i|^2 + 1e-6)``, not exactly 0 -- pinned by
    ``tests/distill/test_golden.py`` for gradients of order 1 and 1e-3). ``"mse"`` / ``"l1"`` are the summed squared / absolute
    differences IDC uses (Kim et al. 2022, released code). All three are
    symmetric in their arguments.
    """
    if real.shape != syn.shape:
        raise ValueError(f"gradient shapes differ: {tuple(real.shape)} vs {tuple(syn.shape)}")
    if metric == "cos":
        rows = real.shape[0] if real.ndim > 1 else 1
        a, b = real.reshape(rows, -1), syn.reshape(rows, -1)
        norms = a.norm(dim=1) * b.norm(dim=1) + _EPS
        return (1.0 - (a * b).sum(dim=1) / norms).sum()
    if metric == "mse":
        return (real - syn).pow(2).sum()
    if metric == "l1":
        return (real - syn).abs().sum()
    raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")


def gradient_distance(
    real: Grads,
    syn: Grads,
    *,
    metric: str = "cos",
    include_bias: bool = False,
    include_fc: bool = True,
) -> torch.Tensor:
    """D(real, syn) of DC eq. 10: :func:`layer_distance` summed over the network's parameters.

    ``real`` and ``syn`` are per-parameter gradients in the same order (as
    from ``torch.autograd.grad``). As in DC, 1-D parameters (biases and
    normalisation affines) are skipped unless ``include_bias``; IDC
    additionally skips 2-D (fully connected) weights (``include_fc=False``).
    """
    if len(real) != len(syn):
        raise ValueError(f"got {len(real)} real and {len(syn)} synthetic gradients")
    total = None
    for r, s in zip(real, syn):
        if r.ndim <= 1 and not include_bias:
            continue
        if r.ndim == 2 and not include_fc:
            continue
        d = layer_distance(r, s, metric)
        total = d if total is None else total + d
    if total is None:
        device = real[0].device if len(real) else None
        return torch.zeros((), device=device)
    return total


def class_gradient(
    net: nn.Module, images: torch.Tensor, label: int, *, create_graph: bool
) -> tuple[torch.Tensor, ...]:
    """grad_theta of the mean cross-entropy of ``images`` all labelled ``label`` (DC eq. 9's L(S_c))."""
    params = [p for p in net.parameters() if p.requires_grad]
    target = torch.full((len(images),), label, dtype=torch.int64, device=images.device)
    loss = F.cross_entropy(net(images), target)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    return grads if create_graph else tuple(g.detach() for g in grads)


def joint_gradient(
    net: nn.Module, batches: Sequence[torch.Tensor], *, create_graph: bool
) -> tuple[torch.Tensor, ...]:
    """grad_theta of ``(1/C) sum_c L(batches[c])`` with ``batches[c]`` labelled c.

    By linearity this is the mean over classes of :func:`class_gradient`, in
    one backward pass (DCC's summed gradient, Lee et al. 2022).
    """
    params = [p for p in net.parameters() if p.requires_grad]
    losses = []
    for label, images in enumerate(batches):
        target = torch.full((len(images),), label, dtype=torch.int64, device=images.device)
        losses.append(F.cross_entropy(net(images), target))
    loss = torch.stack(losses).mean()
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    return grads if create_graph else tuple(g.detach() for g in grads)


def epoch_batches(n: int, batch: int, epochs: int, generator: torch.Generator) -> list[torch.Tensor]:
    """CPU index batches covering ``range(n)`` once per epoch, reshuffled each epoch."""
    batch = min(batch, n)
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        out += list(order.split(batch))
    return out


def random_batches(n: int, batch: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``steps`` CPU index batches of ``min(batch, n)`` distinct indices each."""
    batch = min(batch, n)
    return [torch.randperm(n, generator=generator)[:batch] for _ in range(steps)]


@dataclass(frozen=True)
class GradientMatching(Distiller):
    """DC's Algorithm 1 with hooks; subclasses are the registered methods.

    Settings shared by every variant (defaults are DC's, Zhao et al. ICLR
    2021, sec. 4 and its released ``main.py``; subclasses may override them):

    * ``iterations``: networks sampled (K; DC: 1000);
    * ``match_steps``: image updates per network (T); ``None`` = chosen from
      ``ipc`` by :meth:`default_match_steps`;
    * ``lr_img`` / ``momentum_img``: SGD on the images (DC: 0.1 / 0.5);
    * ``lr_net`` / ``momentum_net`` / ``weight_decay_net``: SGD on the
      network between image updates (DC: 0.01 / 0 / 0);
    * ``batch_real``: real images per class per matching step (DC: 256);
    * ``init``: ``"noise"`` (DC's default, N(0, 1) in normalised space) or
      ``"real"`` (random real images of each class);
    * ``metric``: the distance of :func:`layer_distance` (DC: ``"cos"``);
    * ``width`` / ``depth``: the matched ConvNet (DC: 128 / 3). On 8x8
      images use depth <= 2: at depth 3 the last block normalises 2x2 maps,
      and matching gradients of that network diverges at DC's lr_img;
    * ``dsa``: the :class:`DSA` strategy used siamese-ly on the real and
      synthetic batch of each class (DC: ``"none"``; the DSA paper's
      strategy is the default of :class:`~proxynas.distill.dc.DSAMatching`);
    * ``log_every``: progress is reported every that many iterations;
    * ``networks``: ``"convnet"`` (the papers' ConvNet of ``width``/``depth``)
      or ``"space"``: every iteration's network is a fresh random cell of the
      search space being ranked, built as candidates are, with their batch
      norm (:meth:`distill` must then be given ``space=``). A deliberate
      deviation from the papers, against summaries tuned to one architecture
      (DC-Bench, Cui et al., NeurIPS 2022). For a network with batch norm,
      each matching step first fixes the BN statistics on a real batch of up
      to 16 images per class and computes the per-class gradients with the BN
      layers in eval mode; the network update between matching steps trains
      it normally (DC's released code for BN models).

    ``Summary.history`` holds, per iteration, the objective averaged over its
    ``match_steps`` matching steps.

    A checkpoint (taken between iterations) holds the optimised tensor, its
    SGD momentum, the generator's state and the history: every iteration's
    network and its optimiser are drawn afresh from the generator, so nothing
    else carries over.
    """

    iterative: ClassVar[bool] = True

    iterations: int = checked(1000, gt=0)
    match_steps: int | None = checked(None, gt=0)
    # NaN learning rates are let through on purpose, and reported as a
    # divergence at the iteration where they bite
    lr_img: float = checked(0.1, gt=0, allow_nan=True)
    momentum_img: float = checked(0.5, ge=0, lt=1)
    lr_net: float = checked(0.01, gt=0, allow_nan=True)
    momentum_net: float = checked(0.0, ge=0, lt=1)
    weight_decay_net: float = checked(0.0, ge=0)
    batch_real: int = checked(256, gt=0)
    init: str = checked("noise", choices=INITS)
    metric: str = checked("cos", choices=METRICS)
    width: int = checked(128, gt=0)
    depth: int = checked(3, gt=0)
    dsa: str = checked("none", check=check_strategy)
    log_every: int = checked(10, gt=0)
    networks: str = checked("convnet", choices=NETWORKS)

    # ------------------------------------------------------------ settings
    def setting(self, field: str) -> str:
        """Dotted config path of one of this method's settings (for error messages)."""
        return f"distill.methods.{self.name}.{field}"

    @property
    def needs_space(self) -> bool:
        """True with ``networks: space``: :meth:`distill` then needs ``space=``."""
        return self.networks == "space"

    @property
    def augment(self) -> DSA:
        """Siamese A(., omega) for matching: one omega per class, shared by its real and synthetic batch."""
        return DSA(strategy=self.dsa)

    @property
    def net_augment(self) -> DSA:
        """Augmentation when training the matched network: one omega per image (DSA paper)."""
        return DSA(strategy=self.dsa, per_sample=True)

    def default_match_steps(self, ipc: int) -> int:
        """T when ``match_steps`` is None; subclasses with a paper table override it."""
        return 10

    def steps_for(self, ipc: int) -> int:
        return self.match_steps if self.match_steps is not None else self.default_match_steps(ipc)

    def image_lr(self, ipc: int) -> float:
        """The SGD step size on the optimised tensor (``lr_img`` unless a subclass scales it)."""
        return self.lr_img

    # ------------------------------------------------------ parameterisation
    def initial_images(
        self, train: ImageData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """The optimised tensor at step 0: ``init`` images per class (:func:`~proxynas.distill.base.initial_images`)."""
        return initial_images(train, ipc, self.init, generator, device)

    def decode(self, stored: torch.Tensor, train: ImageData, ipc: int) -> torch.Tensor:
        """Normalised images ``[C * images_per_class(ipc), ...]`` (class-major) from the optimised tensor.

        The identity here: the optimised tensor is the images.
        """
        return stored

    def project(self, stored: torch.Tensor, train: ImageData) -> None:
        """Constrain the optimised tensor in place after updates (nothing here)."""

    def stored_numbers(self, stored: torch.Tensor, ipc: int) -> int | None:
        """What the summary stores when that is not its images (``Summary.stored_numbers``); None here."""
        return None

    # ------------------------------------------------------------ networks
    def new_network(
        self,
        train: ImageData,
        real_x: torch.Tensor,
        real_y: torch.Tensor,
        seed: int,
        device: torch.device,
        generator: torch.Generator,
        iteration: int,
        space: "SearchSpace | None" = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """theta_0 ~ P_theta: a seeded random network and the SGD optimiser that trains it.

        The papers' ConvNet, or with ``networks: space`` a random cell of
        ``space`` (:func:`draw_network`).
        """
        space = space if self.networks == "space" else None
        require_space(self.name, self.networks, space)
        net = draw_network(train, seed, device, space=space, width=self.width, depth=self.depth).module
        net.requires_grad_(True).train()
        optimizer = torch.optim.SGD(
            net.parameters(), lr=self.lr_net, momentum=self.momentum_net, weight_decay=self.weight_decay_net
        )
        return net, optimizer

    @abstractmethod
    def update_network(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        syn_x: torch.Tensor,
        syn_y: torch.Tensor,
        real_x: torch.Tensor,
        real_y: torch.Tensor,
        ipc: int,
        generator: torch.Generator,
        iteration: int,
    ) -> None:
        """theta_{t+1} from theta_t between two matching steps (``syn_x`` is detached)."""

    def sgd_steps(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        batches: Sequence[torch.Tensor],
        generator: torch.Generator,
        iteration: int,
    ) -> None:
        """One cross-entropy SGD step per index batch, with :attr:`net_augment`.

        Raises :class:`DivergenceError` naming ``lr_net`` on a non-finite loss
        or network weights.
        """
        augment = self.net_augment
        loss = None
        for idx in batches:
            idx = idx.to(x.device)
            xb = x[idx]
            if augment.parts:
                xb = augment(xb, draw_seed(generator))
            loss = F.cross_entropy(net(xb), y[idx])
            if not torch.isfinite(loss):
                self._network_diverged(loss.item(), iteration)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        # The last step can itself overflow, which would otherwise surface as a bad image loss.
        if loss is not None and not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
            self._network_diverged(float("nan"), iteration)

    def _network_diverged(self, value: float, iteration: int) -> None:
        raise DivergenceError(
            f"{self.name}: network training loss became {value} at iteration {iteration}; "
            f"lower {self.setting('lr_net')}"
        )

    # ----------------------------------------------------------- objective
    def distance(self, real: Grads, syn: Grads) -> torch.Tensor:
        """D of DC eq. 10 with this method's metric (biases skipped)."""
        return gradient_distance(real, syn, metric=self.metric)

    def objective(self, real: Sequence[Grads], syn: Sequence[Grads]) -> torch.Tensor:
        """DC eq. 9 at one theta: ``sum_c D(real[c], syn[c])`` over per-class gradients."""
        return torch.stack([self.distance(r, s) for r, s in zip(real, syn)]).sum()

    def class_gradients(
        self, net: nn.Module, real: Sequence[torch.Tensor], syn: Sequence[torch.Tensor]
    ) -> tuple[list[tuple[torch.Tensor, ...]], list[tuple[torch.Tensor, ...]]]:
        """Per-class gradients of class c's (augmented) real batch ``real[c]`` and synthetic ``syn[c]``.

        Real gradients are constants; synthetic ones keep their graph so a
        loss built on them can be differentiated with respect to the images.
        """
        real_grads = [class_gradient(net, r, k, create_graph=False) for k, r in enumerate(real)]
        syn_grads = [class_gradient(net, s, k, create_graph=True) for k, s in enumerate(syn)]
        return real_grads, syn_grads

    def matching_loss(
        self, net: nn.Module, real: Sequence[torch.Tensor], syn: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """:meth:`objective` of the per-class gradients (:meth:`class_gradients`)."""
        return self.objective(*self.class_gradients(net, real, syn))

    def step_loss(
        self,
        net: nn.Module,
        real: Sequence[torch.Tensor],
        syn: Sequence[torch.Tensor],
        *,
        iteration: int,
        step: int,
    ) -> torch.Tensor:
        """The loss minimised at matching step ``step`` (0-based) of iteration ``iteration`` (1-based).

        :meth:`matching_loss` at every step here; a method with a schedule
        (DCC's warm-up) chooses per step.
        """
        return self.matching_loss(net, real, syn)

    # --------------------------------------------------------------- driver
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
        """DC Algorithm 1: for each of ``iterations`` fresh networks, alternate
        ``match_steps`` image updates with :meth:`update_network`.

        Each matching step draws, per class, a real batch of up to
        ``batch_real`` images and one DSA seed shared by that class's real and
        synthetic batch (siamese), then takes one SGD step (:meth:`image_lr`,
        ``momentum_img``) on the optimised tensor, minimising
        :meth:`step_loss`. The summary holds :meth:`images_per_class` images
        per class decoded from that tensor. As in DC the network is not
        updated after the last matching step of an iteration. All randomness
        comes from one CPU generator seeded with ``seed``.

        With ``networks: space`` the networks are random cells of ``space``
        (without ``space`` that raises :class:`ConfigError`); if a network has
        batch norm, each matching step first draws up to ``BN_PER_CLASS`` (16)
        real images per class, fixes the BN statistics on them and matches
        with the BN layers in eval mode (:func:`freeze_batchnorm`), then puts
        the network back in train mode for :meth:`update_network`.

        The loop resumes from and saves into ``checkpoint``, between
        iterations (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        require_space(self.name, self.networks, space)
        return self._distill(
            train, ipc, seed=seed, device=device, progress=progress, space=space, checkpoint=checkpoint
        )

    def _distill(
        self,
        train: ImageData,
        ipc: int,
        *,
        seed: int,
        device: torch.device,
        progress: Progress,
        space: "SearchSpace | None",
        checkpoint: Checkpoint | None = None,
    ) -> Summary:
        check_ipc(train, ipc)
        generator = torch.Generator().manual_seed(seed)
        k = train.num_classes
        per_class = self.images_per_class(ipc)
        steps = self.steps_for(ipc)
        stored = self.initial_images(train, ipc, generator, device).requires_grad_(True)
        optimizer = torch.optim.SGD([stored], lr=self.image_lr(ipc), momentum=self.momentum_img)
        real_x = train.x.to(device, torch.float32)
        real_y = train.y.to(device)
        indices = [idx.to(device) for idx in class_indices(train)]
        syn_y = torch.arange(k, device=device).repeat_interleave(per_class)
        augment = self.augment
        history: list[float] = []
        lr_img = self.setting("lr_img")
        loop = Loop(self.name, tensors={"stored": stored}, optimizers=[optimizer], generators=[generator],
                    history=history)

        for it in loop.range(self.iterations, checkpoint):
            net_seed = draw_seed(generator)
            net, net_optimizer = self.new_network(train, real_x, real_y, net_seed, device, generator, it, space)
            # the papers' ConvNet has instance norm: the default path draws nothing more
            batchnorm = has_batchnorm(net)
            with torch.no_grad():
                self.project(stored, train)
            losses = []
            for step in range(steps):
                if batchnorm:  # DC's released code for BN models: all-class statistics, then BN in eval
                    picks = [torch.randperm(len(idx), generator=generator)[:BN_PER_CLASS] for idx in indices]
                    mixed = torch.cat([idx[pick.to(device)] for idx, pick in zip(indices, picks)])
                    freeze_batchnorm(net, real_x[mixed])
                syn = self.decode(stored, train, ipc).split(per_class)
                real, fake = [], []
                for c, idx in enumerate(indices):
                    pick = torch.randperm(len(idx), generator=generator)[: self.batch_real]
                    aug_seed = draw_seed(generator)
                    real.append(augment(real_x[idx[pick.to(device)]], aug_seed))
                    fake.append(augment(syn[c], aug_seed))
                loss = self.step_loss(net, real, fake, iteration=it, step=step)
                losses.append(check_finite(loss.item(), method=self.name, iteration=it, setting=lr_img))
                # Only the images are differentiated; the network keeps no .grad from matching.
                (stored.grad,) = torch.autograd.grad(loss, [stored])
                optimizer.step()
                if not torch.isfinite(stored).all():
                    check_finite(float("nan"), method=self.name, iteration=it, setting=lr_img)
                if batchnorm:
                    net.train()
                if step < steps - 1:
                    syn_now = self.decode(stored.detach(), train, ipc)
                    self.update_network(
                        net, net_optimizer, syn_now, syn_y, real_x, real_y, ipc, generator, it
                    )
            history.append(sum(losses) / len(losses))
            if it % self.log_every == 0 or it == self.iterations:
                progress(it, self.iterations, loss=history[-1])

        with torch.no_grad():
            self.project(stored, train)
        images = self.decode(stored.detach(), train, ipc)
        summary = make_summary(train, images.split(per_class), self.name, history)
        return dataclasses.replace(summary, stored_numbers=self.stored_numbers(stored.detach(), ipc))


def dc_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) of DC's released code for ``ipc``: match steps T and network epochs.

    DC (Zhao et al. 2021, sec. 4 / released ``get_loops``): ipc 1 -> (1, 1),
    10 -> (10, 50), 20 -> (20, 25), 30 -> (30, 20), 40 -> (40, 15),
    50 -> (50, 10). Other ipc take the row of the nearest listed ipc
    (ties to the smaller), with T = min(ipc, 50).
    """
    table = {1: 1, 10: 50, 20: 25, 30: 20, 40: 15, 50: 10}
    nearest = min(table, key=lambda row: (abs(row - ipc), row))
    return min(ipc, 50), table[nearest]


__all__ = [
    "GradientMatching",
    "METRICS",
    "class_gradient",
    "dc_loops",
    "epoch_batches",
    "gradient_distance",
    "joint_gradient",
    "layer_distance",
    "random_batches",
]
