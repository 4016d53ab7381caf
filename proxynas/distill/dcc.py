"""Dataset Condensation with Contrastive signals (DCC) and its DSA version DSAC.

Lee, Chun, Jung, Yun & Yoon, "Dataset Condensation with Contrastive Signals"
(ICML 2022). DC matches gradients class by class,
``sum_c D(grad L(S_c), grad L(T_c))`` (DC eq. 9), so the synthetic images of
one class never see the other classes and need not carry what tells classes
apart. DCC's loss (sec. 3) matches the gradient of the loss accumulated over
*all* classes jointly,

    L_DCC = D( (1/C) sum_c grad_theta L(S_c; theta),  (1/C) sum_c grad_theta L(T_c; theta) ),

so each class's synthetic gradient is matched in the presence of the others'
(the classifier rows of different classes interact through the softmax): the
"contrastive signals" of the title. Because L_DCC is unstable from a random
start, the paper's bi-level warm-up minimises DC's loss first: at matching
step ``t`` (0-based) of outer iteration ``k`` (1-based) the step uses DC's
loss while ``k <= outer_warmup`` and ``t < inner_warmup``, and L_DCC
otherwise (released ``main.py``: ``--outer_warmup 250 --inner_warmup 10``,
contrast unless ``outer_warmup <= ol or inner_warmup <= il``). Everything
else, including the network trajectory trained on the synthetic set, is DC's.

Registered as ``dcc`` (DCC: no augmentation, the released code's default
``--method DC``) and ``dsac`` (DSAC: with DSA, ``--method DSA``), one method
per published row, as their evaluations differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

from proxynas.augment import DEFAULT_STRATEGY
from proxynas.distill.base import DISTILLERS, EvaluationProtocol
from proxynas.distill.dc import DC, PAPER_ITERATIONS, DSAMatching, cifar10_presets
from proxynas.distill.gradient_matching import Grads, dc_loops, joint_gradient
from proxynas.fields import checked


def dcc_loops(ipc: int) -> tuple[int, int]:
    """(match steps, network epochs) of DCC's released ``get_loops``: DC's table (:func:`dc_loops`) but ipc 1 -> (10, 5)."""
    return (10, 5) if ipc == 1 else dc_loops(ipc)


#: the released code's settings shared by its CIFAR-10 runs (``main.py`` defaults; it always starts from real images)
_PAPER = {"iterations": PAPER_ITERATIONS, "lr_img": 0.1, "lr_net": 0.01, "batch_real": 256, "batch_train": 256,
          "init": "real", "outer_warmup": 250, "inner_warmup": 10}


@DISTILLERS.register("dcc")
@dataclass(frozen=True)
class DCC(DC):
    """DCC (Lee et al., ICML 2022, sec. 3: L_DCC with its bi-level warm-up); defaults are the released code's.

    As :class:`DC` (K = 1000 outer iterations, lr_img 0.1 with momentum 0.5,
    lr_net 0.01, 256 real images per class, no augmentation) except: the
    synthetic set starts from random real images (the released ``main.py``
    has no other initialisation), the per-ipc loops are DCC's
    (:func:`dcc_loops`), and the first ``outer_warmup`` iterations minimise
    DC's loss for their first ``inner_warmup`` matching steps (250 and 10 in
    the released code). During the warm-up ``Summary.history`` holds DC's
    loss, the one minimised.
    """

    name: ClassVar[str] = "dcc"
    #: 2: the bi-level warm-up, DCC's own loops and real-image initialisation
    version: ClassVar[str] = "2"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = cifar10_presets(dcc_loops, **_PAPER, dsa="none")
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=300,
        augment="none",
        source=(
            "DCC released main.py --method DC + utils.evaluate_synset (Lee et al. ICML 2022): as DC's, 300 epochs"
            " without augmentation for CIFAR-10 ConvNet, SGD lr 0.01 momentum 0.9 wd 5e-4, batch 256, lr x0.1 half way"
        ),
    )

    init: str = "real"
    outer_warmup: int = checked(250, ge=0)
    inner_warmup: int = checked(10, ge=0)

    def default_match_steps(self, ipc: int) -> int:
        """DCC's match steps for ``ipc`` (:func:`dcc_loops`)."""
        return dcc_loops(ipc)[0]

    def epochs_for(self, ipc: int) -> int:
        """DCC's network epochs for ``ipc`` unless ``net_epochs`` is set."""
        return self.net_epochs if self.net_epochs is not None else dcc_loops(ipc)[1]

    def warming_up(self, iteration: int, step: int) -> bool:
        """Whether matching step ``step`` (0-based) of iteration ``iteration`` (1-based) minimises DC's loss."""
        return iteration <= self.outer_warmup and step < self.inner_warmup

    def objective(self, real: Sequence[Grads], syn: Sequence[Grads]) -> torch.Tensor:
        """L_DCC from per-class gradients: D between the class-averaged real and synthetic gradients."""
        k = len(real)
        real_mean = [torch.stack(per_param).sum(0) / k for per_param in zip(*real)]
        syn_mean = [torch.stack(per_param).sum(0) / k for per_param in zip(*syn)]
        return self.distance(real_mean, syn_mean)

    def matching_loss(
        self, net: nn.Module, real: Sequence[torch.Tensor], syn: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """L_DCC in one backward pass per side: the gradient of the class-averaged loss."""
        real_grads = joint_gradient(net, real, create_graph=False)
        syn_grads = joint_gradient(net, syn, create_graph=True)
        return self.distance(real_grads, syn_grads)

    def step_loss(
        self,
        net: nn.Module,
        real: Sequence[torch.Tensor],
        syn: Sequence[torch.Tensor],
        *,
        iteration: int,
        step: int,
    ) -> torch.Tensor:
        """DC's loss (its eq. 9 via :meth:`DC.objective`) during the warm-up, L_DCC after it."""
        if self.warming_up(iteration, step):
            return super().objective(*self.class_gradients(net, real, syn))
        return self.matching_loss(net, real, syn)


@DISTILLERS.register("dsac")
@dataclass(frozen=True)
class DSAC(DCC):
    """DSAC (Lee et al., ICML 2022): :class:`DCC` with DSA's siamese augmentation (Zhao & Bilen, ICML 2021, eq. 6).

    The released ``main.py --method DSA``: the strategy
    ``color_crop_cutout_flip_scale_rotate`` on each class's real and
    synthetic batch (one omega per class) and on the synthetic images the
    network trains on (one per image); everything else as :class:`DCC`.
    """

    name: ClassVar[str] = "dsac"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = cifar10_presets(dcc_loops, **_PAPER, dsa=DEFAULT_STRATEGY)
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=DSAMatching.paper_protocol.epochs,
        augment="dsa",
        source=(
            "DCC released main.py --method DSA + utils.evaluate_synset (Lee et al. ICML 2022): epoch_eval_train 1000"
            " with DSA color_crop_cutout_flip_scale_rotate, SGD lr 0.01 momentum 0.9 wd 5e-4, batch 256, lr x0.1 half"
            " way"
        ),
    )

    dsa: str = DEFAULT_STRATEGY
