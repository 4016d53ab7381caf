"""The NAS-Bench-201 network, written from the paper's description.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020, Sec. 2.1 / Fig. 1: a 3x3-conv stem, then three
stages of N identical cells with C, 2C and 4C channels, joined by residual
reduction blocks, then BN-ReLU, global average pooling and a linear classifier.
We re-implement it (rather than depend on the benchmark's package) so that the
cell ops are registry plug-ins and the network accepts any input channel count
and image size; with C=16, N=5, 3 input channels and 10 classes its parameter
count equals the benchmark's ``params_MB`` (checked in the tests).

The network takes a cell as ``(op, input)`` pairs, not as a string: parsing is
the space's job (``NB201Space.build``, :func:`proxynas.spaces.nb201.parse_arch`),
so this module needs only the ops and the space can import it without a cycle.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from proxynas.errors import ArchError
from proxynas.spaces.nb201_ops import CELL_OPS, ReLUConvBN, Zero


def _nodes_for(num_edges: int) -> int:
    """Node count n with n(n-1)/2 == num_edges (a complete DAG), or ArchError."""
    n = 2
    while n * (n - 1) // 2 < num_edges:
        n += 1
    if n * (n - 1) // 2 != num_edges:
        raise ArchError(f"{num_edges} edges cannot form a cell: expected n(n-1)/2 edges for n nodes (NB201: 6)")
    return n


class NB201Cell(nn.Module):
    """Node j = sum over i < j of op_{j,i}(node_i); the cell returns the last node.

    Edges are given in NB201 order (1<-0),(2<-0),(2<-1),(3<-0),... so the edge
    into node j from node i is the ``j(j-1)/2 + i``-th.
    """

    def __init__(self, pairs: Sequence[tuple[str, int]], channels: int) -> None:
        super().__init__()
        self.nodes = _nodes_for(len(pairs))
        expected = [i for j in range(1, self.nodes) for i in range(j)]
        if [i for _, i in pairs] != expected:
            raise ArchError(f"cell inputs {[i for _, i in pairs]} must follow NB201 edge order {expected}")
        unknown = sorted({op for op, _ in pairs if op not in CELL_OPS})
        if unknown:
            raise ArchError(
                f"no implementation for op(s) {', '.join(unknown)}; implemented: {', '.join(CELL_OPS.names())}"
            )
        self.edges = nn.ModuleList(CELL_OPS.get(op)(channels) for op, _ in pairs)
        self.live_edges_only = False
        self._live_inputs = _live_inputs([isinstance(edge, Zero) for edge in self.edges], self.nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.live_edges_only:
            return self.forward_live_edges(x)
        return self.forward_all_edges(x)

    def forward_all_edges(self, x: torch.Tensor) -> torch.Tensor:
        """Every edge computed, ``none`` ones as zeros kept in the autograd graph (what NB201's code does)."""
        feats, k = [x], 0
        for j in range(1, self.nodes):
            feats.append(sum(self.edges[k + i](feats[i]) for i in range(j)))
            k += j
        return feats[-1]

    def forward_live_edges(self, x: torch.Tensor) -> torch.Tensor:
        """The cell's output computed from the edges that can change it, for training only.

        Skipped: ``none`` edges (each adds zeros) and every edge into a node
        that reaches the output through ``none`` edges only (its value is
        never used). The output is :meth:`forward_all_edges`'s, value for
        value (adding zeros changes at most the sign of a zero), and so is
        the gradient of every parameter that it depends on; the parameters
        of skipped edges get no gradient instead of zeros. Zero-cost proxies
        read every edge's activations and gradients, so a network uses this
        only when built to be trained
        (:meth:`NB201Space.build_for_training <proxynas.spaces.nb201.NB201Space.build_for_training>`).
        """
        feats: list[torch.Tensor | None] = [x]
        for inputs in self._live_inputs:
            if inputs is None:  # no path to the output
                feats.append(None)
                continue
            if not inputs:  # only none edges come in: zeros, still depending on x as NB201's are
                feats.append(x.mul(0.0))
                continue
            # summed from 0 as forward_all_edges sums: dropping that add reorders the backward's
            # gradient accumulation, and the gradients would no longer round alike
            feats.append(sum(self.edges[k](feats[i]) for k, i in inputs))
        return feats[-1]


def _live_inputs(zero: Sequence[bool], nodes: int) -> list[list[tuple[int, int]] | None]:
    """For nodes 1..n-1: the ``(edge index, source node)`` of their non-``none`` inputs, or None if unused.

    A node is used if it is the output or feeds a used node through an edge
    that is not ``none``; edges are in NB201 order (into node j from node i:
    the ``j(j-1)/2 + i``-th).
    """
    def edge(j: int, i: int) -> int:
        return j * (j - 1) // 2 + i

    used = {nodes - 1}
    for j in range(nodes - 2, 0, -1):
        if any(t in used and not zero[edge(t, j)] for t in range(j + 1, nodes)):
            used.add(j)
    return [
        [(edge(j, i), i) for i in range(j) if not zero[edge(j, i)]] if j in used else None
        for j in range(1, nodes)
    ]


class ResidualReduction(nn.Module):
    """NB201's stage transition: a ResNet basic block that halves H, W and doubles C.

    The shortcut pools before its 1x1 conv (rather than a strided 1x1 conv) as
    in the paper's skeleton. ``ceil_mode`` makes the shortcut's output size
    ceil(H/2), equal to the stride-2 conv branch, so odd image sizes also work;
    for even sizes it is the plain 2x2 average pool.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2, ceil_mode=True),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201Network(nn.Module):
    """Stem, 3 stages of ``cells_per_stage`` cells (C, 2C, 4C), BN-ReLU, pool, linear.

    ``arch`` is the cell's ``(op, input)`` pairs in NB201 edge order, e.g.
    ``parse_arch("|nor_conv_3x3~0|+|...")``; any complete-DAG cell works, so
    variant cell spaces with other node counts reuse this skeleton.

    ``live_edges_only``: the cells skip the edges that cannot change their
    output (:meth:`NB201Cell.forward_live_edges`), for a network that is only
    trained and evaluated.

    Features (for zero-cost proxies, cf. NASLib's ``forward_before_global_avg_pool``):
    :meth:`forward_features` returns F_0 (the stem's output, the first cell's
    input) then the output of every cell and reduction block.
    """

    def __init__(
        self,
        arch: Sequence[tuple[str, int]],
        channels: int = 16,
        cells_per_stage: int = 5,
        in_channels: int = 3,
        num_classes: int = 10,
        live_edges_only: bool = False,
    ) -> None:
        super().__init__()
        for key, value in (
            ("channels", channels),
            ("cells_per_stage", cells_per_stage),
            ("in_channels", in_channels),
            ("num_classes", num_classes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NB201Network: {key} must be an integer >= 1, got {value!r}")
        if isinstance(arch, str):
            raise ArchError(
                "NB201Network takes the cell's (op, input) pairs, not a string:"
                " pass proxynas.spaces.parse_arch(arch), or build it with NB201Space.build"
            )
        self.arch_pairs = tuple((str(op), int(i)) for op, i in arch)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            for _ in range(cells_per_stage):
                cell = NB201Cell(self.arch_pairs, c)
                cell.live_edges_only = live_edges_only
                layers.append(cell)
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        self.feature_dim = c

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """F_0..F_L: the stem's output, then the output of each cell / reduction block."""
        feats = [self.stem(x)]
        for block in self.cells:
            feats.append(block(feats[-1]))
        return feats

    def forward_before_global_avg_pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``[B, 4C, H/4, W/4]``, after the final BN-ReLU, before pooling."""
        return self.lastact(self.cells(self.stem(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ``[B, 4C]`` features that the classifier sees."""
        return self.pool(self.forward_before_global_avg_pool(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
