"""The NAS-Bench-201 cell search space and its arch-string codec.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020. A cell is a DAG over 4 nodes in which every
node j > 0 sums one op applied to each earlier node; the 6 edges each pick one
of 5 ops, giving 5**6 = 15,625 cells. The benchmark names a cell by a string
such as ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``:
``+`` separates nodes 1..3 and ``op~i`` is the op on the edge from node i.
We keep that exact string as the canonical name so archs can be joined with
the published results table character for character.

The benchmark's own integer index is *not* a function of the string (its order
was fixed when the benchmark was built), so no index function lives here; the
reference-table module maps index <-> string.

The op list and node count come from ``proxynas/spaces/specs/<spec>.yaml`` so
that a variant cell space is a new YAML file, not new code. Enumeration,
sampling and the integer codes come from :class:`~proxynas.spaces.product.ProductSpace`
(one op per edge); the ops are in :mod:`proxynas.spaces.nb201_ops` and the
network in :mod:`proxynas.spaces.nb201_network`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import ClassVar, Sequence, Union

import torch

from proxynas.errors import ArchError, ConfigError
from proxynas.spaces.base import SEARCH_SPACES
from proxynas.spaces.nb201_fused import FusedNB201Network
from proxynas.spaces.nb201_network import NB201Network
from proxynas.spaces.nb201_ops import CELL_OPS
from proxynas.spaces.product import ProductSpace
from proxynas.spaces.spec import CellSpec, load_spec

#: The op that cuts an edge (outputs zeros); NB201 calls it ``none``.
ZERO_OP = "none"

Pairs = tuple[tuple[str, int], ...]
ArchLike = Union[str, Sequence[tuple[str, int]]]


@lru_cache(maxsize=None)
def _default_spec() -> CellSpec:
    return load_spec("nb201")


def expected_format(spec: CellSpec | None = None) -> str:
    """The arch-string template for ``spec``, shown in every parse error."""
    spec = spec or _default_spec()
    return "+".join("|" + "|".join(f"op~{i}" for i in range(j)) + "|" for j in range(1, spec.nodes))


def _fail(arch: object, problem: str, spec: CellSpec) -> ArchError:
    return ArchError(f"invalid {spec.name} arch {arch!r}: {problem}; expected format {expected_format(spec)}")


def parse_arch(arch: str, spec: CellSpec | None = None) -> Pairs:
    """``(op, input)`` pairs in edge order (1<-0),(2<-0),(2<-1),(3<-0),(3<-1),(3<-2).

    Strict: inputs must be listed as 0..j-1 in order, because the canonical
    string is what gets joined with the benchmark table, and a permuted spelling
    of the same cell would silently fail that join.
    """
    spec = spec or _default_spec()
    if not isinstance(arch, str):
        raise _fail(arch, f"expected a string, got {type(arch).__name__}", spec)
    text = arch.strip()
    groups = text.split("+")
    if len(groups) != spec.nodes - 1:
        raise _fail(
            arch,
            f"found {len(groups)} node group(s) separated by '+', expected {spec.nodes - 1}"
            f" (nodes 1..{spec.nodes - 1}; node 0 is the cell input)",
            spec,
        )
    pairs: list[tuple[str, int]] = []
    for j, group in enumerate(groups, start=1):
        if len(group) < 2 or not group.startswith("|") or not group.endswith("|"):
            raise _fail(arch, f"node {j} group {group!r} must start and end with '|'", spec)
        tokens = group[1:-1].split("|")
        if len(tokens) != j:
            problem = f"node {j} has {len(tokens)} input(s), expected {j} (one from each node 0..{j - 1})"
            raise _fail(arch, problem, spec)
        for i, token in enumerate(tokens):
            op, sep, index = token.partition("~")
            if not sep or not op or "~" in index:
                raise _fail(arch, f"edge {token!r} of node {j} must look like 'op~{i}'", spec)
            if index != str(i):
                raise _fail(arch, f"edge {token!r} of node {j} has input index {index!r}, expected {i}", spec)
            if op not in spec.ops:
                raise _fail(arch, f"unknown op {op!r}; allowed ops: {', '.join(spec.ops)}", spec)
            pairs.append((op, i))
    return tuple(pairs)


def _as_pairs(arch: ArchLike, spec: CellSpec) -> Pairs:
    if isinstance(arch, str):
        return parse_arch(arch, spec)
    return parse_arch(format_arch(arch, spec), spec)


def format_arch(pairs: Sequence[tuple[str, int]], spec: CellSpec | None = None) -> str:
    """The canonical string of ``pairs`` (the inverse of :func:`parse_arch`)."""
    spec = spec or _default_spec()
    pairs = tuple(tuple(p) for p in pairs)
    if len(pairs) != spec.num_edges:
        raise _fail(pairs, f"got {len(pairs)} (op, input) pairs, expected {spec.num_edges}", spec)
    groups, k = [], 0
    for j in range(1, spec.nodes):
        tokens = []
        for i in range(j):
            pair = pairs[k]
            k += 1
            if len(pair) != 2:
                raise _fail(pairs, f"pair {pair!r} must be (op, input)", spec)
            op, index = pair
            if op not in spec.ops:
                raise _fail(pairs, f"unknown op {op!r}; allowed ops: {', '.join(spec.ops)}", spec)
            if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index != i:
                raise _fail(pairs, f"pair {pair!r} into node {j} has input {index!r}, expected {i}", spec)
            tokens.append(f"{op}~{i}")
        groups.append("|" + "|".join(tokens) + "|")
    return "+".join(groups)


def is_connected(arch: ArchLike, spec: CellSpec | None = None) -> bool:
    """Whether the cell output is reachable from its input through non-``none`` edges.

    A disconnected cell outputs zeros whatever its input, so every such arch in
    NB201 is the same (untrainable) function; searches often skip them.
    """
    spec = spec or _default_spec()
    pairs = _as_pairs(arch, spec)
    return _connected(tuple(spec.ops.index(op) for op, _ in pairs), spec)


def _connected(code: tuple[int, ...], spec: CellSpec) -> bool:
    zero = spec.ops.index(ZERO_OP) if ZERO_OP in spec.ops else -1
    reached, k = [True], 0
    for j in range(1, spec.nodes):
        reached.append(any(reached[i] and code[k + i] != zero for i in range(j)))
        k += j
    return reached[-1]


@SEARCH_SPACES.register("nb201")
@dataclass(frozen=True)
class NB201Space(ProductSpace):
    """NAS-Bench-201's 15,625 cells in its C/N macro skeleton (Dong & Yang, ICLR 2020).

    ``channels``/``cells_per_stage`` default to the benchmark's C=16, N=5 so that
    built networks are the ones whose accuracies the benchmark reports.
    ``skip_disconnected`` drops cells whose output never sees the input: they
    compute a constant, so ranking them only adds ties at the bottom.
    ``spec`` names the YAML cell definition (a variant space is a new file).

    ``validate`` decides membership (so it rejects disconnected cells when they
    are skipped); ``encode``/``build``/``is_connected`` accept any well-formed
    cell, because reference tables contain the disconnected ones too. A code is
    the index of each edge's op in the spec's op list, in edge order.
    """

    name: ClassVar[str] = "nb201"

    channels: int = 16
    cells_per_stage: int = 5
    skip_disconnected: bool = False
    spec: str = "nb201"

    def __post_init__(self) -> None:
        for key in ("channels", "cells_per_stage"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {key} must be an integer >= 1, got {value!r}")
        if not isinstance(self.skip_disconnected, bool):
            raise ValueError(f"{self.name}: skip_disconnected must be true or false, got {self.skip_disconnected!r}")
        if not isinstance(self.spec, str):
            raise ValueError(
                f"{self.name}: spec must be the name of a proxynas/spaces/specs/*.yaml file, got {self.spec!r}"
            )
        missing = [op for op in self.cell_spec.ops if op not in CELL_OPS]
        if missing:
            raise ConfigError(
                f"{self.cell_spec.path}: op(s) {', '.join(missing)} have no implementation;"
                f" implemented: {', '.join(CELL_OPS.names())}"
            )

    @cached_property
    def cell_spec(self) -> CellSpec:
        return _default_spec() if self.spec == "nb201" else load_spec(self.spec)

    # -- the product: one op per edge --------------------------------------------

    def choices(self) -> tuple[tuple[str, ...], ...]:
        return (self.cell_spec.ops,) * self.cell_spec.num_edges

    def arch_values(self, arch: str) -> tuple[str, ...]:
        return tuple(op for op, _ in parse_arch(arch, self.cell_spec))

    def arch_string(self, values: Sequence[str]) -> str:
        spec = self.cell_spec
        if len(values) != spec.num_edges:
            raise _fail(tuple(values), f"got {len(values)} ops, expected {spec.num_edges}", spec)
        inputs = (i for j in range(1, spec.nodes) for i in range(j))
        return format_arch(tuple(zip(values, inputs)), spec)

    @property
    def filtered(self) -> bool:
        return self.skip_disconnected

    def accepts(self, code: tuple[int, ...]) -> bool:
        return not self.skip_disconnected or _connected(code, self.cell_spec)

    def rejection(self, arch: str) -> str:
        return (
            f"arch {arch!r} is not in this space: its output is disconnected from its input"
            " (all paths pass through 'none') and skip_disconnected is true"
        )

    @property
    def member_adjective(self) -> str:
        return " connected" if self.skip_disconnected else ""

    @property
    def label(self) -> str:
        return self.cell_spec.name

    def code_help(self) -> str:
        ops = self.cell_spec.ops
        return f"in 0..{len(ops) - 1} (indices into ops {', '.join(ops)})"

    # -- networks -----------------------------------------------------------

    fuses: ClassVar[bool] = True
    # benchmarks/memory_layout.py on one CPU thread (2026-11-28): a training step of C=8 N=1
    # at 16x16 takes 0.78x the time channels-last, C=16 N=5 at 32x32 0.64x (the NCHW 3x3
    # average pool alone costs twice a 3x3 convolution at C=8); on CUDA channels-last is what
    # bf16 tensor-core convolutions want (not yet timed there)
    trains_channels_last: ClassVar[bool] = True

    def fuse(self, networks: Sequence[torch.nn.Module]) -> torch.nn.Module:
        """The networks' skeletons stacked and each cell edge run once per op (:mod:`.nb201_fused`)."""
        return FusedNB201Network(networks)

    def build(self, arch: str, *, in_channels: int, num_classes: int, image_size: int) -> torch.nn.Module:
        """The NB201 network; it is size-agnostic (global pooling), so ``image_size`` is only checked."""
        return self._network(arch, in_channels, num_classes, image_size, live_edges_only=False)

    def build_for_training(self, arch: str, *, in_channels: int, num_classes: int, image_size: int) -> torch.nn.Module:
        """The NB201 network, its cells skipping the edges that cannot change their output.

        ``none`` edges and edges into nodes unused by the cell's output
        (:meth:`~proxynas.spaces.nb201_network.NB201Cell.forward_live_edges`):
        bit-equal logits and trained weights where they matter, for less time
        per training step: ``benchmarks/live_edges.py`` on one CPU thread
        (2026-11-28, channels-last, batch 100) measured 0.95x at C=8 N=1,
        16x16 (16 uniformly drawn cells) and 0.85x at C=16 N=5, 32x32 (4).
        """
        return self._network(arch, in_channels, num_classes, image_size, live_edges_only=True)

    def _network(self, arch: str, in_channels: int, num_classes: int, image_size: int, *,
                 live_edges_only: bool) -> NB201Network:
        sizes = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        for key, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {key} must be an integer >= 1, got {value!r}")
        return NB201Network(
            parse_arch(arch, self.cell_spec),
            channels=self.channels,
            cells_per_stage=self.cells_per_stage,
            in_channels=in_channels,
            num_classes=num_classes,
            live_edges_only=live_edges_only,
        )
