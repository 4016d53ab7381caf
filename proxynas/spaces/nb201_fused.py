"""Many NAS-Bench-201 networks trained as one: the skeleton fused, each cell edge dispatched per op.

All networks of an NB201 space share the skeleton (stem, reduction blocks,
head: :class:`~proxynas.spaces.nb201_network.NB201Network`) and differ only in
the op on each cell edge. :class:`FusedNB201Network` stacks the skeletons'
weights (:func:`proxynas.models.fused.fuse_modules`) and, on every edge, splits
the networks by their op: the networks with a 3x3 convolution there run it as
one grouped convolution, those with a 1x1 as another, pooling and skip act on
their channels, ``none`` contributes zeros. Each node then sums its incoming
edges in the order the single network sums them, so network k computes what
it computes alone (up to the convolution kernels' float rounding) and its
gradients are its own.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from proxynas.models.fused import FusedConv2d, NotFusable, channel_index, fuse_modules, write_back
from proxynas.spaces.nb201_network import NB201Cell, NB201Network
from proxynas.spaces.nb201_ops import Zero


class _FusedEdge(nn.Module):
    """One cell edge of n networks: the networks grouped by op, each group's op fused."""

    def __init__(self, ops: Sequence[nn.Module], channels: int) -> None:
        super().__init__()
        groups: dict[str, list[int]] = {}
        for k, op in enumerate(ops):
            # ops are grouped by class and layout; two 'nor_conv' kernels differ in layout
            groups.setdefault(_op_key(op), []).append(k)
        self.count, self.channels = len(ops), channels
        self.group_ops = nn.ModuleList()
        self._members: list[list[int]] = []
        for key, members in groups.items():
            if key.startswith("Zero"):
                continue
            self.group_ops.append(fuse_modules([ops[k] for k in members]))
            self._members.append(members)
        for i, members in enumerate(self._members):
            self.register_buffer(f"gather_{i}", channel_index(members, channels), persistent=False)
        zero_members = groups.get("Zero", [])
        self.zero_count = len(zero_members)
        # channels of the concatenated group outputs (non-zero groups first, zeros last) back to network order
        concat_order = [k for members in self._members for k in members] + zero_members
        inverse = torch.empty(len(concat_order), dtype=torch.long)
        inverse[torch.tensor(concat_order)] = torch.arange(len(concat_order))
        self.in_order = concat_order == list(range(self.count))
        self.register_buffer("scatter", channel_index(inverse.tolist(), channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self._members) == 1 and self.zero_count == 0:
            return self.group_ops[0](x)  # every network has the same op here: no gather
        parts = [op(x.index_select(1, getattr(self, f"gather_{i}"))) for i, op in enumerate(self.group_ops)]
        if self.zero_count:
            b, _, h, w = x.shape
            parts.append(x.new_zeros(b, self.zero_count * self.channels, h, w))
        out = torch.cat(parts, dim=1)
        return out if self.in_order else out.index_select(1, self.scatter)


def _op_key(op: nn.Module) -> str:
    if isinstance(op, Zero):
        return "Zero"
    return f"{type(op).__name__}:{op!r}"


class _FusedCell(nn.Module):
    """n cells on channel-stacked input: node j = sum over i < j of edge_{j,i}(node_i), per network."""

    def __init__(self, cells: Sequence[NB201Cell], channels: int) -> None:
        super().__init__()
        nodes = {c.nodes for c in cells}
        if len(nodes) != 1:
            raise NotFusable(f"cells with different node counts {sorted(nodes)} cannot be fused")
        self.nodes = nodes.pop()
        self.edges = nn.ModuleList(
            _FusedEdge([c.edges[e] for c in cells], channels) for e in range(len(cells[0].edges))
        )

    # the single cell's own forward: each network then adds its edges in the same order
    forward = NB201Cell.forward_all_edges


class FusedNB201Network(nn.Module):
    """n :class:`NB201Network` of one skeleton trained side by side; ``forward`` gives ``[B, n, classes]``.

    Built from freshly initialised networks (so each starts from the weights
    it would have alone); :meth:`write_back` copies the trained weights into
    them. NotFusable if the skeletons differ (channels, cells per stage,
    input channels, classes).
    """

    def __init__(self, networks: Sequence[NB201Network]) -> None:
        super().__init__()
        if not networks:
            raise ValueError("FusedNB201Network needs at least one network")
        if any(not isinstance(n, NB201Network) for n in networks):
            raise NotFusable("FusedNB201Network fuses NB201Network instances only")
        self.count = len(networks)
        self.sources = tuple(networks)
        stems = [n.stem for n in networks]
        self.stem = nn.Sequential(
            FusedConv2d([s[0] for s in stems], shared_input=True),
            fuse_modules([s[1] for s in stems]),
        )
        blocks: list[nn.Module] = []
        for position in range(len(networks[0].cells)):
            column = [n.cells[position] for n in networks]
            if isinstance(column[0], NB201Cell):
                blocks.append(_FusedCell(column, _cell_channels(networks[0], position)))
            else:
                blocks.append(fuse_modules(column))
        self.cells = nn.Sequential(*blocks)
        self.lastact = fuse_modules([n.lastact for n in networks])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = fuse_modules([n.classifier for n in networks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.lastact(self.cells(self.stem(x)))).flatten(1)
        return self.classifier(features)

    def write_back(self) -> None:
        """Copy the trained weights and BatchNorm statistics into the source networks."""
        write_back(self)


def _cell_channels(network: NB201Network, position: int) -> int:
    """Channels of the cell at ``position``: C before the first reduction, 2C, then 4C."""
    reductions = sum(1 for block in list(network.cells)[:position] if not isinstance(block, NB201Cell))
    return network.stem[0].out_channels * 2**reductions
