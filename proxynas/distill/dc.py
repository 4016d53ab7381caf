"""Dataset Condensation (DC) and its siamese-augmented version DSA, one registered method each.

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching" (ICLR
2021): synthetic images are learned by matching, class by class, the gradient
of the training loss on the synthetic images with the gradient on real images
(eq. 9), with the layer-wise cosine distance of eq. 10, along the trajectory of
a network trained on the synthetic set (Algorithm 1). Registered as ``dc``.

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation"
(ICML 2021; "DSA"): both batches of a class go through the same sampled
differentiable augmentation A(., omega_c) before their gradients are matched
(eq. 6), and the network is trained on augmented synthetic images.
Registered as ``dsa``: the same algorithm with the ``dsa`` strategy on and
real-image initialisation by default. The two are separate methods (not one
method with a switch) because their papers start from different images and
evaluate their summaries differently (:attr:`DC.paper_protocol`,
:attr:`DSAMatching.paper_protocol`), and a method has one protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from proxynas.augment import DEFAULT_STRATEGY
from proxynas.distill.base import DISTILLERS, EvaluationProtocol, preset_name
from proxynas.distill.gradient_matching import GradientMatching, dc_loops, epoch_batches
from proxynas.fields import checked

#: DC's and DSA's outer iterations K on CIFAR-10 (released ``main.py``: ``--Iteration 1000``)
PAPER_ITERATIONS = 1000
#: the CIFAR-10 storage budgets of the papers' Tab. 1
PAPER_IPCS = (1, 10, 50)


def cifar10_presets(loops: Callable[[int], tuple[int, int]], **common: Any) -> dict[str, dict[str, Any]]:
    """``cifar10-ipc{1,10,50}`` presets: ``common`` plus that ipc's (match_steps, net_epochs) from ``loops``."""
    presets = {}
    for ipc in PAPER_IPCS:
        match_steps, net_epochs = loops(ipc)
        presets[preset_name("cifar10", ipc)] = {**common, "match_steps": match_steps, "net_epochs": net_epochs}
    return presets


@DISTILLERS.register("dc")
@dataclass(frozen=True)
class DC(GradientMatching):
    """DC (Zhao, Mopuri & Bilen, ICLR 2021, Algorithm 1, eqs. 9-10); defaults are the paper's.

    K = 1000 iterations, lr_img 0.1 with momentum 0.5, lr_net 0.01 (plain
    SGD), 256 real images per class, a ConvNet of width 128 and depth 3, no
    augmentation (``dsa: none``), the synthetic set initialised from Gaussian
    noise (``init: noise``; the released ``main.py`` default ``--init noise``), and per-ipc
    loops (:func:`dc_loops`): ``match_steps`` (DC's "outer_loop") and
    ``net_epochs`` (DC's "inner_loop": epochs of SGD on the synthetic set in
    mini-batches of ``batch_train``) are taken from that table when left
    ``None``. See :class:`GradientMatching` for the shared settings.

    Turning ``dsa`` on gives DSA's matching with DC's initialisation; the DSA
    paper's method is the ``dsa`` distiller (:class:`DSAMatching`).
    """

    #: 2: DC's distance adds 1e-6 to the norm product (the released ``distance_wb``) instead of flooring it
    version: ClassVar[str] = "2"
    name: ClassVar[str] = "dc"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = cifar10_presets(
        dc_loops, iterations=PAPER_ITERATIONS, lr_img=0.1, lr_net=0.01, batch_real=256, batch_train=256, init="noise",
        dsa="none",
    )
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=300,
        augment="none",
        source=(
            "DC released main.py + utils.evaluate_synset (Zhao et al. ICLR 2021, Tab. 1): 300 epochs without"
            " augmentation for CIFAR-10 ConvNet (get_daparam strategy 'none'), SGD lr 0.01 momentum 0.9"
            " wd 5e-4, batch 256, lr x0.1 half way"
        ),
    )

    net_epochs: int | None = checked(None, gt=0)
    batch_train: int = checked(256, gt=0)

    def default_match_steps(self, ipc: int) -> int:
        """DC's outer_loop for ``ipc`` (:func:`dc_loops`)."""
        return dc_loops(ipc)[0]

    def epochs_for(self, ipc: int) -> int:
        """DC's inner_loop for ``ipc`` unless ``net_epochs`` is set."""
        return self.net_epochs if self.net_epochs is not None else dc_loops(ipc)[1]

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
        """DC Algorithm 1, theta_{t+1} = opt-alg_theta(L(S), ...): ``net_epochs`` epochs of SGD on S.

        With DSA each synthetic image is augmented with its own omega, as the
        DSA paper trains networks on synthetic data.
        """
        batches = epoch_batches(len(syn_x), self.batch_train, self.epochs_for(ipc), generator)
        self.sgd_steps(net, optimizer, syn_x, syn_y, batches, generator, iteration)


@DISTILLERS.register("dsa")
@dataclass(frozen=True)
class DSAMatching(DC):
    """DSA (Zhao & Bilen, ICML 2021, eq. 6): DC with siamese augmentation; defaults are the paper's.

    As :class:`DC` (K = 1000, the same learning rates, batches and per-ipc
    loops) except: the DSA strategy ``color_crop_cutout_flip_scale_rotate``
    (the released README's CIFAR-10 command and ``ParamDiffAug``) applied
    siamese-ly to each class's real and synthetic batch, the network trained
    on synthetic images augmented one omega per image, and the synthetic set
    initialised from random real images (``--init real`` in that command).
    """

    name: ClassVar[str] = "dsa"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = cifar10_presets(
        dc_loops, iterations=PAPER_ITERATIONS, lr_img=0.1, lr_net=0.01, batch_real=256, batch_train=256, init="real",
        dsa=DEFAULT_STRATEGY,
    )
    paper_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol(
        epochs=1000,
        augment="dsa",
        source=(
            "DSA released main.py --method DSA + utils.evaluate_synset (Zhao & Bilen ICML 2021, Tab. 1):"
            " epoch_eval_train 1000 with DSA color_crop_cutout_flip_scale_rotate, SGD lr 0.01 momentum 0.9"
            " wd 5e-4, batch 256, lr x0.1 half way"
        ),
    )

    init: str = "real"
    dsa: str = DEFAULT_STRATEGY
