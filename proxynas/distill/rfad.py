"""Random Feature Approximation Distillation (RFAD).

Loo, Hasani, Amini & Rus, "Efficient Dataset Distillation using Random
Feature Approximation" (NeurIPS 2022). RFAD is KIP (Nguyen et al., ICLR 2021)
with two changes:

* The kernel is the NNGP of the ConvNet, estimated from random features
  instead of computed exactly. ``M`` finite-width ConvNets with Gaussian
  weights are sampled afresh every iteration; their last hidden layers,
  concatenated and scaled by ``1/sqrt(N)`` (N = all features of all M
  networks), are the features ``Phi``, and with the read-out layer's weight
  and bias variances ``sigma_w^2``, ``sigma_b^2``

      K(x, x') ~= sigma_w^2 Phi(x) . Phi(x') + sigma_b^2,

  the Monte-Carlo estimate of ``E_theta[f_theta(x) f_theta(x')]`` (the
  NNGP). It is linear in the support size where KIP's exact ConvNet kernel
  is quadratic.
* The loss on a target batch T is Platt scaling instead of MSE: the
  cross-entropy of the kernel-ridge-regression predictions scaled by a
  learned factor ``exp(s)`` (an inverse temperature):

      y_hat_T = K_TS (K_SS + lambda I)^{-1} y_S,
      L = CE(softmax(exp(s) * y_hat_T), c_T),   lambda = reg * tr(K_SS) / |S|.

The equation numbers of the paper could not be checked here (only its
abstract is in the reference library), so the equations are written out above
and each setting names the line of the authors' released code
(github.com/yolky/RFAD) it follows. The code's defaults are the ones of the
README's CIFAR-10 command (``run_distillation.py --platt``), which produced the
released CIFAR-10 sets (``distilled_images_final/cifar10/*/best.npz``: those
sets hold a learned Platt factor and fixed labels).

The paper distils and evaluates ZCA-whitened CIFAR-10 and CIFAR-100
(regularisation 0.1 times the mean eigenvalue, ``data.get_zca_matrix`` after
per-channel standardisation), so :attr:`RFAD.paper_protocol` has ``zca=True``;
whitening is a dataset transform (:mod:`proxynas.data.zca`, its
``RELEASED_SETTINGS["rfad"]``), not part of this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import torch
import torch.nn.functional as F

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
    descend,
    finish_summary,
    initial_images,
)
from proxynas.distill.checkpoint import Checkpoint, Loop
from proxynas.distill.krr import krr_predict, regression_targets
from proxynas.fields import checked
from proxynas.numerics import draw_seed, sample_batch
from proxynas.progress import Progress, null_progress

SETTING = "distill.methods.rfad.lr_img"  # what to lower when the objective diverges
LOSSES = ("platt", "mse")
OPTIMIZERS = ("adabelief", "adam")
#: AdaBelief's epsilon in the released code (distillation.py, ``eps = 1e-16``)
ADABELIEF_EPS = 1e-16


@dataclass(frozen=True)
class RandomConvNets:
    """``count`` ConvNets with Gaussian weights, run side by side: their scaled last hidden layers are random features.

    Each network is the ConvNet of the dataset-condensation papers without
    normalisation and without its classifier: ``depth`` blocks of
    ``Conv3x3(width) -> ReLU -> AvgPool2x2`` (a pool is skipped once the map
    is 1 pixel high or wide). Weights are drawn ``N(0, weight_var / fan_in)``
    and biases ``N(0, bias_var)``, the parameterisation whose infinite-width
    limit is the NNGP (RFAD's ``models.ConvNet_wide`` with ``Conv2d_gaussian``:
    ``weight_var`` 2, bias standard deviation 0.1).

    The networks run as one grouped convolution (the first layer shares its
    input, the later ones are ``count`` groups), which is the same as running
    them one by one.
    """

    #: per block, the stacked ``(weight [count*width, in, 3, 3], bias [count*width])``
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    count: int

    @classmethod
    def draw(
        cls,
        generator: torch.Generator,
        in_channels: int,
        *,
        count: int,
        width: int,
        depth: int,
        weight_var: float,
        bias_var: float,
        device: torch.device,
    ) -> "RandomConvNets":
        """Fresh networks from ``generator`` (drawn on the CPU, so the same on every device)."""
        layers = []
        channels = in_channels
        for _ in range(depth):
            fan_in = channels * 9
            weight = torch.randn(count * width, channels, 3, 3, generator=generator) * math.sqrt(weight_var / fan_in)
            bias = torch.randn(count * width, generator=generator) * math.sqrt(bias_var)
            layers.append((weight.to(device), bias.to(device)))
            channels = width
        return cls(tuple(layers), count)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``Phi(x)``: ``[N, F]``, every network's flattened last feature map, all divided by ``sqrt(F)``.

        ``Phi(x) . Phi(x')`` is then the mean over networks and features of
        ``f(x) f(x')``, the random-feature estimate of the NNGP of the layer.
        """
        h = x
        for i, (weight, bias) in enumerate(self.layers):
            h = F.conv2d(h, weight.to(h.dtype), bias.to(h.dtype), padding=1, groups=1 if i == 0 else self.count)
            # in place: at CIFAR scale one block's map is ~10 GB for 1280 images, and a copy would double it
            h = F.relu(h, inplace=True)
            if h.shape[-2] >= 2 and h.shape[-1] >= 2:
                h = F.avg_pool2d(h, 2)
        features = h.flatten(1)
        return features / math.sqrt(features.shape[1])


def nngp_estimate(phi_a: torch.Tensor, phi_b: torch.Tensor, weight_var: float, bias_var: float) -> torch.Tensor:
    """``sigma_w^2 Phi_a Phi_b^T + sigma_b^2``: the NNGP of a read-out layer over random features, ``[n_a, n_b]``."""
    return weight_var * (phi_a @ phi_b.T) + bias_var


def platt_loss(pred: torch.Tensor, labels: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """RFAD's Platt-scaling loss: mean cross-entropy of ``softmax(exp(log_scale) * pred)`` against class ``labels``.

    ``exp(log_scale)`` is the learned inverse temperature (the code's ``k``,
    initialised to 0 so the factor starts at 1; distillation.py).
    """
    return F.cross_entropy(log_scale.exp() * pred, labels)


class AdaBelief(torch.optim.Optimizer):
    """AdaBelief (Zhuang et al., NeurIPS 2020, Algorithm 2), the optimiser of RFAD's released code.

    Adam whose second moment tracks the squared deviation of the gradient from
    its running mean rather than the squared gradient::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        s_t = b2 s_{t-1} + (1 - b2) (g_t - m_t)^2 + eps
        p_t = p_{t-1} - lr / (1 - b1^t) * m_t / (sqrt(s_t / (1 - b2^t)) + eps)

    No weight decay, no rectification, no AMSGrad (the defaults the released
    code runs with).
    """

    def __init__(
        self, params: Iterable[Any], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = ADABELIEF_EPS
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_var"] = torch.zeros_like(param)
                state["step"] += 1
                t = state["step"]
                mean, var = state["exp_avg"], state["exp_avg_var"]
                mean.mul_(beta1).add_(param.grad, alpha=1 - beta1)
                deviation = param.grad - mean
                var.mul_(beta2).addcmul_(deviation, deviation, value=1 - beta2).add_(eps)
                denom = (var.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
                param.addcdiv_(mean, denom, value=-group["lr"] / (1 - beta1**t))


#: the released code's CIFAR-10 run (run_distillation.py, the README's command with
#: --platt); it is the same for every ipc, so each preset pins all of it
_CIFAR10: dict[str, Any] = {
    "iterations": 100_000,
    "models": 8,
    "width": 256,
    "depth": 3,
    "reg": 5e-3,
    "loss": "platt",
    "learn_labels": False,
    "optimizer": "adabelief",
    "lr_img": 1e-3,
    "lr_scale": 1e-2,
    "lr_transform": 5e-5,
    "batch_target": 1280,
    "target_batches": 4,
    "init": "real",
    "select_best": True,
    "validate_every": 40,
    "patience": 1000,
    "validation_per_class": 500,
    "validation_models": 16,
}


@DISTILLERS.register("rfad")
@dataclass(frozen=True)
class RFAD(Distiller):
    """RFAD; every default is the released code's CIFAR-10 run (github.com/yolky/RFAD).

    Kernel: ``models`` random ConvNets (run_distillation.py: ``n_models`` 8)
    of ``width`` channels (256: ``ConvNet_wide`` with ``k = 2`` times 128) and
    ``depth`` blocks (3), weight/bias variances ``weight_var``/``bias_var``
    (2, 0.01; models.py ``Conv2d_gaussian``, and the read-out ``2 * K + 0.01``
    of distillation.py), drawn afresh every iteration (the schedule
    ``[(0, n_models, 1)]``). ``reg`` is lambda before the trace scaling (the
    code's ``jit``, 5e-3).

    Each iteration draws ``target_batches`` batches of ``batch_target`` real
    images (4 x 1280, each without replacement), computes their features
    without a graph, and takes one ``optimizer`` step (AdaBelief, eps 1e-16)
    on the support images with lr ``lr_img`` (1e-3), on the Platt factor
    ``s`` with ``lr_scale`` (1e-2) when ``loss`` is ``"platt"``, and, with
    ``learn_labels``, on the support labels (initialised to centred one-hot).
    ``optimizer: adam`` swaps in Adam with the same learning rates.
    ``loss: mse`` is KIP's ``1/2 mean (y - y_hat)^2`` (the code without
    ``--platt``).

    ``lr_transform`` (5e-5): the code also learns a linear map ``A`` of the
    flattened images (``transform_mat``, identity at the start) and
    distils ``X A``; the summary holds ``X A``. 0 turns it off (a detail of
    the code; ``A`` is a ``(C H W)^2`` matrix, 9.4M numbers on CIFAR, with
    two optimiser moments each).

    ``select_best`` (True): every ``validate_every`` (40) iterations, and at
    the start, the support set is scored on ``validation_per_class`` (500)
    training images per class drawn with replacement (as the code does), with
    the same loss under a fixed kernel of ``validation_models`` (16) networks.
    The best-scoring set is returned, and the run stops once ``patience``
    (1000) iterations pass without a better score; ``iterations`` (100000) is
    only a cap there. The end of a run that is not stopped early is scored
    too. False runs all ``iterations`` and returns the last set.

    Learned labels come back as :attr:`Summary.soft_labels` (MSE targets,
    as the paper's evaluation trains on them); the released CIFAR-10 sets
    keep fixed labels, which is the default. ``Summary.history`` holds the
    loss of every iteration; progress is reported every ``log_every``
    iterations. A checkpoint holds the images, labels, Platt factor and
    transform, the optimiser's state, the generator's state, the history and
    the best set so far.
    """

    name: ClassVar[str] = "rfad"
    iterative: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cifar10-ipc1": _CIFAR10,
        "cifar10-ipc10": _CIFAR10,
        "cifar10-ipc50": _CIFAR10,
    }
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=20_000,
        optimizer="sgd",
        lr=1e-3,
        momentum=0.9,
        weight_decay=0.0,
        lr_decay=1.0,
        batch=513,
        augment="none",
        labels="learned",
        loss="mse",
        zca=True,
        source=(
            "RFAD released code, eval_distilled_set.py --run_finite --use_best_hypers (training.train_network, "
            "utils.get_best_finite_hypers; Loo et al. NeurIPS 2022, finite-network table): SGD momentum 0.9, "
            "no weight decay, lr 1e-3 at CIFAR-10 ipc 1 and 10 (1e-2 at ipc 50), batch 513 (full batch), "
            "at most 20000 steps, MSE on the summary's labels, no augmentation, ZCA. Not expressed here: "
            "a ConvNet of width 1024 without normalisation, labels scaled by 8 (ipc 1) or 2 (ipc 10, 50), "
            "the initial network's output subtracted (centering), early stopping on validation accuracy "
            "(every 100 steps, patience 500)"
        ),
    )

    iterations: int = checked(100_000, gt=0)
    models: int = checked(8, gt=0)
    width: int = checked(256, gt=0)
    depth: int = checked(3, gt=0)
    weight_var: float = checked(2.0, gt=0)
    bias_var: float = checked(0.01, ge=0)
    reg: float = checked(5e-3, ge=0)
    loss: str = checked("platt", choices=LOSSES)
    learn_labels: bool = checked(False)
    optimizer: str = checked("adabelief", choices=OPTIMIZERS)
    # a NaN learning rate is let through on purpose, and reported as a
    # divergence at the iteration where it bites
    lr_img: float = checked(1e-3, gt=0, allow_nan=True)
    lr_scale: float = checked(1e-2, gt=0)
    lr_transform: float = checked(5e-5, ge=0)
    batch_target: int = checked(1280, gt=0)
    target_batches: int = checked(4, gt=0)
    init: str = checked("real", choices=INITS)
    select_best: bool = checked(True)
    validate_every: int = checked(40, gt=0)
    patience: int = checked(1000, ge=0)
    validation_per_class: int = checked(500, gt=0)
    validation_models: int = checked(16, gt=0)
    log_every: int = checked(10, gt=0)

    def networks(self, generator: torch.Generator, in_channels: int, count: int, device: torch.device) -> RandomConvNets:
        """``count`` fresh random ConvNets of this method's width, depth and variances."""
        return RandomConvNets.draw(
            generator, in_channels, count=count, width=self.width, depth=self.depth,
            weight_var=self.weight_var, bias_var=self.bias_var, device=device,
        )

    def objective(
        self,
        phi_s: torch.Tensor,
        y_s: torch.Tensor,
        log_scale: torch.Tensor,
        phi_t: torch.Tensor,
        labels_t: torch.Tensor,
    ) -> torch.Tensor:
        """The loss of support features ``phi_s`` with targets ``y_s`` ``[n_s, K]`` on targets ``phi_t`` of class ``labels_t``.

        The KRR prediction is solved in float64 (as the code does); the loss
        is :func:`platt_loss` or KIP's ``1/2 mean (y_t - y_hat_t)^2`` on
        centred one-hot ``y_t``.
        """
        k_ss = nngp_estimate(phi_s, phi_s, self.weight_var, self.bias_var)
        k_ts = nngp_estimate(phi_t, phi_s, self.weight_var, self.bias_var)
        pred = krr_predict(k_ts, k_ss, y_s.to(torch.float64), self.reg)
        if self.loss == "platt":
            return platt_loss(pred, labels_t, log_scale)
        targets = regression_targets(labels_t, y_s.shape[1]).to(torch.float64)
        return 0.5 * ((targets - pred) ** 2).mean()

    def _features(self, nets: RandomConvNets, x: torch.Tensor) -> torch.Tensor:
        """Graph-free features of many images, ``batch_target`` at a time (bounded activation memory)."""
        with torch.no_grad():
            return torch.cat([nets(chunk) for chunk in x.split(self.batch_target)])

    def _validation(
        self, train: ImageData, real_x: torch.Tensor, real_y: torch.Tensor, seed: int, device: torch.device
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float]:
        """The validation score of a support set: the loss on held images under a fixed kernel (distillation.py)."""
        generator = torch.Generator().manual_seed(seed)
        picks = torch.cat([
            idx[torch.randint(len(idx), (self.validation_per_class,), generator=generator)]
            for idx in class_indices(train)
        ]).to(device)
        nets = self.networks(generator, train.shape[0], self.validation_models, device)
        phi_v, labels_v = self._features(nets, real_x[picks]), real_y[picks]

        def score(images: torch.Tensor, labels: torch.Tensor, log_scale: torch.Tensor) -> float:
            with torch.no_grad():
                return float(self.objective(nets(images), labels, log_scale, phi_v, labels_v))

        return score

    def _optimizer(
        self, syn: torch.Tensor, labels: torch.Tensor, log_scale: torch.Tensor, transform: torch.Tensor | None
    ) -> torch.optim.Optimizer:
        """One optimiser, a learning rate per group as in the released code (distillation.py)."""
        groups: list[dict[str, Any]] = [{"params": [syn, labels] if self.learn_labels else [syn]}]
        if transform is not None:
            groups.append({"params": [transform], "lr": self.lr_transform})
        if self.loss == "platt":
            groups.append({"params": [log_scale], "lr": self.lr_scale})
        if self.optimizer == "adabelief":
            return AdaBelief(groups, lr=self.lr_img)
        return torch.optim.Adam(groups, lr=self.lr_img)

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
        """Minimise the RFAD loss over the support set (KIP's loop with the random-feature kernel).

        All randomness (initial images, networks, target batches, the
        validation images and networks) comes from one CPU generator seeded
        with ``seed``; the validation draws use a seed taken from it first,
        whether or not ``select_best`` is on, so both settings train through
        the same iterates. The loop resumes from and saves into
        ``checkpoint`` (:class:`~proxynas.distill.checkpoint.Loop`).
        """
        check_ipc(train, ipc)
        generator = torch.Generator().manual_seed(seed)
        validation_seed = draw_seed(generator)
        k = train.num_classes
        c, h, w = train.shape
        syn = initial_images(train, ipc, self.init, generator, device).requires_grad_(True)
        hard = torch.arange(k, device=device).repeat_interleave(ipc)
        labels = regression_targets(hard, k).requires_grad_(self.learn_labels)
        log_scale = torch.zeros((), dtype=torch.float64, device=device, requires_grad=self.loss == "platt")
        transform = None
        if self.lr_transform > 0:
            transform = torch.eye(c * h * w, device=device).requires_grad_(True)
        optimizer = self._optimizer(syn, labels, log_scale, transform)
        real_x = train.x.to(device, torch.float32)
        real_y = train.y.to(device)

        def support() -> torch.Tensor:
            return syn if transform is None else (syn.flatten(1) @ transform).view_as(syn)

        tensors = {"syn": syn, "labels": labels, "log_scale": log_scale}
        if transform is not None:
            tensors["transform"] = transform
        history: list[float] = []
        score = None
        best: dict[str, Any] = {}
        if self.select_best:
            score = self._validation(train, real_x, real_y, validation_seed, device)

            def validate(iteration: int) -> None:
                images, learned = support().detach(), labels.detach()
                value = score(images, learned, log_scale.detach())
                if not best or value < best["loss"]:
                    best.update(images=images.clone(), labels=learned.clone(), iteration=iteration, loss=value)

            validate(0)
        loop = Loop(self.name, tensors=tensors, optimizers=[optimizer], generators=[generator], history=history,
                    extra=(lambda: dict(best)) if score is not None else None,
                    load_extra=best.update if score is not None else None)

        validated_last = False
        for it in loop.range(self.iterations, checkpoint):
            nets = self.networks(generator, c, self.models, device)
            picks = torch.cat([sample_batch(len(train), self.batch_target, generator)
                               for _ in range(self.target_batches)]).to(device)
            phi_t = self._features(nets, real_x[picks])
            loss = self.objective(nets(support()), labels, log_scale, phi_t, real_y[picks])
            value = descend(optimizer, loss, history, method=self.name, iteration=it, iterations=self.iterations,
                            setting=SETTING, progress=progress, log_every=self.log_every)
            validated_last = score is not None and it % self.validate_every == 0
            if validated_last:
                validate(it)
                if it > best["iteration"] + self.patience:
                    progress(self.iterations, self.iterations, loss=value, stopped_at=float(it))
                    break

        if score is not None and not validated_last:
            validate(len(history))
        if score is not None:
            images, learned = best["images"], best["labels"]
        else:
            images, learned = support().detach(), labels.detach()
        if not (torch.isfinite(images).all() and torch.isfinite(learned).all()):
            check_finite(float("nan"), method=self.name, iteration=len(history), setting=SETTING)
        return finish_summary(train, images, ipc, self.name, history, learned if self.learn_labels else None)
