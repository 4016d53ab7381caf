"""K-center coreset: greedily cover each class in feature space.

Sener & Savarese, "Active Learning for Convolutional Neural Networks: A
Core-Set Approach" (ICLR 2018), Algorithm 1 ("k-Center-Greedy"), a
2-approximation of their minimax (k-center) core-set problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from proxynas.distill.base import DISTILLERS, EvaluationProtocol, FeatureCoreset
from proxynas.distill.random import CORESET_PROTOCOL


@DISTILLERS.register("kcenter")
@dataclass(frozen=True)
class KCenter(FeatureCoreset):
    """Greedy k-center per class in ConvNet or pixel feature space (settings: see FeatureCoreset)."""

    name: ClassVar[str] = "kcenter"
    paper_protocol: ClassVar[EvaluationProtocol] = CORESET_PROTOCOL

    def select(self, feats: torch.Tensor, ipc: int, generator: torch.Generator) -> torch.Tensor:
        """Sener & Savarese 2018, Alg. 1: u = argmax_i min_{j in s} ||x_i - x_j||; s <- s + {u}.

        With no labelled pool to start from, the first centre is drawn
        uniformly with the seeded ``generator``. The distance to the nearest
        centre is kept as a running minimum, so each step is one pass.
        """
        first = int(torch.randint(0, len(feats), (), generator=generator))
        chosen = [first]
        nearest = torch.cdist(feats, feats[first : first + 1]).flatten()
        for _ in range(ipc - 1):
            # Chosen points have distance 0; mask them so duplicate images cannot be re-picked.
            nearest[chosen] = -1.0
            u = int(torch.argmax(nearest))
            chosen.append(u)
            nearest = torch.minimum(nearest, torch.cdist(feats, feats[u : u + 1]).flatten())
        return torch.tensor(chosen, dtype=torch.int64)
