"""Herding coreset: greedily match each class's feature mean.

Welling, "Herding Dynamical Weights to Learn" (ICML 2009), in the greedy form
of Rebuffi et al., "iCaRL: Incremental Classifier and Representation Learning"
(CVPR 2017), Algorithm 4 ("ConstructExemplarSet").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from proxynas.distill.base import DISTILLERS, EvaluationProtocol, FeatureCoreset
from proxynas.distill.random import CORESET_PROTOCOL


@DISTILLERS.register("herding")
@dataclass(frozen=True)
class Herding(FeatureCoreset):
    """Herding selection per class in ConvNet or pixel feature space (settings: see FeatureCoreset)."""

    name: ClassVar[str] = "herding"
    paper_protocol: ClassVar[EvaluationProtocol] = CORESET_PROTOCOL

    @property
    def seeded(self) -> bool:
        # Herding itself is deterministic; only the random ConvNet embedding uses the seed.
        return self.features == "convnet"

    def select(self, feats: torch.Tensor, ipc: int, generator: torch.Generator) -> torch.Tensor:
        """iCaRL Alg. 4: p_k = argmin_x || mu - 1/k (phi(x) + sum_{j<k} phi(p_j)) ||.

        mu is the class mean of the features; already chosen points are
        excluded so the ``ipc`` exemplars are distinct.
        """
        feats = feats.double()  # accumulated sums over thousands of rows: keep precision
        mu = feats.mean(dim=0)
        running = torch.zeros_like(mu)
        taken = torch.zeros(len(feats), dtype=torch.bool, device=feats.device)
        chosen = []
        for k in range(1, ipc + 1):
            gap = ((mu - (running + feats) / k) ** 2).sum(dim=1)
            gap[taken] = float("inf")
            i = int(torch.argmin(gap))
            chosen.append(i)
            taken[i] = True
            running += feats[i]
        return torch.tensor(chosen, dtype=torch.int64)
