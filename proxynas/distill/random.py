"""Random coreset: a uniform, seeded subset of each class.

The baseline of every dataset-distillation paper (e.g. Zhao et al. 2021 DC,
its "Random" baseline; Cui et al. 2022 DC-Bench).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from proxynas.data.types import ImageData
from proxynas.distill.base import (
    DISTILLERS,
    Distiller,
    EvaluationProtocol,
    Summary,
    check_ipc,
    class_indices,
    make_summary,
)
from proxynas.distill.checkpoint import Checkpoint
from proxynas.progress import Progress, null_progress


#: how DC's Tab. 1 (Zhao et al., ICLR 2021) evaluates the coreset baselines (random, herding, k-center):
#: the ConvNet trained on the chosen real images as on DC's synthetic sets
CORESET_PROTOCOL = EvaluationProtocol(
    epochs=300,
    augment="none",
    source=(
        "DC (Zhao et al. ICLR 2021) Tab. 1 coreset baselines, trained as DC's sets by its released"
        " utils.evaluate_synset: 300 epochs without augmentation on CIFAR-10, SGD lr 0.01 momentum 0.9 wd 5e-4,"
        " batch 256, lr x0.1 half way"
    ),
)


@DISTILLERS.register("random")
@dataclass(frozen=True)
class RandomCoreset(Distiller):
    """``ipc`` images per class drawn uniformly without replacement; no settings."""

    name: ClassVar[str] = "random"
    iterative: ClassVar[bool] = False
    paper_protocol: ClassVar[EvaluationProtocol] = CORESET_PROTOCOL

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
        """Uniform sampling without replacement per class (DC-Bench, Cui et al. 2022).

        A CPU generator seeded with ``seed`` draws the permutations, so the
        subset is the same on every device. Not iterative: ``checkpoint`` is ignored.
        """
        check_ipc(train, ipc)
        generator = torch.Generator().manual_seed(seed)
        indices = class_indices(train)
        per_class = []
        for k, idx in enumerate(indices):
            chosen = idx[torch.randperm(len(idx), generator=generator)[:ipc]]
            per_class.append(train.x[chosen.to(train.x.device)])
            progress(k + 1, len(indices))
        return make_summary(train, per_class, self.name)
