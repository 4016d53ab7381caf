"""The NAS-Bench-201 network, written from the paper's description.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020, Sec. 2.1 / Fig. 1: a 3x3-conv stem, then three
stages of N identical cells with C, 2C and 4C channels, joined by residual
reduction blocks, then BN-ReLU, global average pooling and a linear classifier.
We re-implement it (rather than depend on the benchmark's package) so that the
cell ops are registry plug-ins and the network accepts any input channel count
and image size; with C=16, N=5, 3 input channels and 10 classes its parameter
count equals the benchmark's ``params_MB`` (checked in the tests).
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import nn

from proxynas.errors import ArchError
from proxynas.registry import Registry
from proxynas.spaces.nb201 import parse_arch

#: Cell-op factories ``channels -> module``; every op keeps shape (stride 1, C -> C).
CELL_OPS: Registry[Callable[[int], nn.Module]] = Registry("cell op")


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias; BN follows) -> BN, NB201's ``nor_conv`` ordering.

    The ReLU is not in-place: a node's features feed several edges.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the input's shape.

    Multiplying by 0 (as NB201 does) instead of ``torch.zeros_like`` keeps the
    input in the autograd graph, so upstream parameters get zero gradients
    rather than ``None`` -- gradient-based zero-cost proxies rely on that.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


@CELL_OPS.register("none")
def _none(channels: int) -> nn.Module:
    return Zero()


@CELL_OPS.register("skip_connect")
def _skip(channels: int) -> nn.Module:
    return nn.Identity()


@CELL_OPS.register("nor_conv_1x1")
def _conv1x1(channels: int) -> nn.Module:
    return ReLUConvBN(channels, channels, 1)


@CELL_OPS.register("nor_conv_3x3")
def _conv3x3(channels: int) -> nn.Module:
    return ReLUConvBN(channels, channels, 3)


@CELL_OPS.register("avg_pool_3x3")
def _avg_pool(channels: int) -> nn.Module:
    # count_include_pad=False as in the benchmark's code: border pixels are
    # averaged over real neighbours only, not diluted by zero padding.
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, k = [x], 0
        for j in range(1, self.nodes):
            feats.append(sum(self.edges[k + i](feats[i]) for i in range(j)))
            k += j
        return feats[-1]


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

    ``arch`` is a canonical NB201 string or its ``(op, input)`` pairs (pairs let
    variant cell spaces with other node counts reuse this skeleton).
    """

    def __init__(
        self,
        arch: Union[str, Sequence[tuple[str, int]]],
        channels: int = 16,
        cells_per_stage: int = 5,
        in_channels: int = 3,
        num_classes: int = 10,
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
            arch = parse_arch(arch)
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
            layers.extend(NB201Cell(self.arch_pairs, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        self.feature_dim = c

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ``[B, 4C]`` features that the classifier sees."""
        x = self.lastact(self.cells(self.stem(x)))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
