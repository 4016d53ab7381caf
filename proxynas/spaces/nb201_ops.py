"""The NAS-Bench-201 cell operations, as registry plug-ins.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020, Sec. 2.1: each cell edge is one of zero,
skip (identity), 1x1 / 3x3 ReLU-Conv-BN, or 3x3 average pooling. A cell spec
(``specs/<name>.yaml``) may only name ops registered in :data:`CELL_OPS`; a new
op is one more ``@CELL_OPS.register`` factory here. This module depends on no
other part of the space, so both the space (to check a spec's ops) and the
network (to build the edges) import it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from proxynas.registry import Registry

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
