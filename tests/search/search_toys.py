"""Toy objectives over the NAS-Bench-201 code: fast, deterministic, with a known optimum."""

from __future__ import annotations

from proxynas.search.objective import ArchObjective, Evaluation
from proxynas.spaces import NB201Space

CONV3 = 3  # index of nor_conv_3x3 in NB201's op list


class CountingObjective(ArchObjective):
    """Value = number of edges holding ``target`` (a separable objective, optimum 6 = all edges).

    Counts calls so tests can tell whether an arch was scored again.
    """

    name = "count"
    key = "toy-count"

    def __init__(self, space: NB201Space, target: int = CONV3, seconds: float = 1.0) -> None:
        self.space = space
        self.target = target
        self.seconds = seconds
        self.calls: list[str] = []

    def evaluate(self, arch: str) -> Evaluation:
        self.calls.append(arch)
        return Evaluation(float(sum(c == self.target for c in self.space.encode(arch))), self.seconds)

    def num_params(self, arch: str) -> float:
        # convolutions carry the parameters (1x1: 1, 3x3: 9 per channel pair)
        return float(sum({2: 1, 3: 9}.get(c, 0) for c in self.space.encode(arch)))
