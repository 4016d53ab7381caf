"""Regret of a search: how far the architecture it found is from the best one that exists.

The standard NAS-benchmark measure (Ying et al., "NAS-Bench-101", ICML 2019;
Dong & Yang, "NAS-Bench-201", ICLR 2020): with the ground truth of *every*
architecture in a table, regret = (best ground-truth value in the whole
space) - (ground-truth value of the architecture the search returned). A
search driven by a proxy returns the arch with the best *proxy* value, so its
regret adds the proxy's ranking error to the search's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from proxynas.errors import ArchError, DataError


@dataclass(frozen=True, eq=False)
class Reference:
    """Ground truth of a whole search space: ``{canonical arch: value}``, higher is better.

    ``best`` is the maximum over every entry, so the mapping must cover the
    whole space (e.g. all 15,625 NAS-Bench-201 cells) for regret to mean
    "distance to the optimum"; non-finite values (a table's missing cells)
    are ignored.
    """

    values: Mapping[str, float] = field(repr=False)
    name: str = "reference"
    best: float = field(init=False)
    best_arch: str = field(init=False)

    def __post_init__(self) -> None:
        finite = {a: float(v) for a, v in self.values.items() if math.isfinite(float(v))}
        if not finite:
            raise DataError(f"reference {self.name} has no finite values; it cannot define regret")
        best_arch = max(finite, key=finite.__getitem__)
        object.__setattr__(self, "values", MappingProxyType(finite))
        object.__setattr__(self, "best", finite[best_arch])
        object.__setattr__(self, "best_arch", best_arch)

    @classmethod
    def from_table(cls, table, column: str) -> "Reference":
        """Column ``column`` of an :class:`~proxynas.reference.NB201Table` (every arch it holds)."""
        return cls(table.column(column), name=column)

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, arch: object) -> bool:
        return arch in self.values

    def value(self, arch: str) -> float:
        """The ground truth of ``arch`` (its canonical string)."""
        try:
            return self.values[arch]
        except KeyError:
            raise ArchError(
                f"arch {arch} has no value in reference {self.name} ({len(self)} archs);"
                " the reference must cover the searched space"
            ) from None

    def regret(self, arch: str) -> float:
        """``best - value(arch)``: 0 when the search found an optimum."""
        return self.best - self.value(arch)
