"""The benchmark itself as a proxy: look the architecture up in the NB201 results table.

With ``column: cifar10_test_200ep`` this is the reference every proxy is ranked
against -- NAS-Bench-201's 200-epoch CIFAR-10 test accuracy (Dong & Yang,
"NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search", ICLR 2020), as re-released in the NATS-Bench topology space (Dong,
Liu, Musial & Gabrys, "NATS-Bench: Benchmarking NAS Algorithms for
Architecture Topology and Size", TPAMI 2021). With ``column:
cifar10_test_12ep`` it is the benchmark's "short full-data training" row:
the same networks after the 12-epoch schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.reference.nb201_table import COMPACT_COLUMNS, OFFICIAL_METRICS, load_table, resolve_table_path


@PROXIES.register("nb201_table")
@dataclass(frozen=True)
class NB201TableProxy(Proxy):
    """The ``column`` value of the arch in the NB201 results table at ``path``.

    ``path`` is the compact CSV (``nb201_results.csv.gz``), an official
    ``NAS-Bench-201-v1_*.pth`` or a ``NATS-tss-v1_0-3ffb9-simple`` directory;
    a relative path is relative to the working directory. Empty (the default)
    is the compact table shipped with proxynas
    (:func:`proxynas.reference.default_table_path`); it stays empty in the
    config so cache keys do not depend on the install location. Constructing the
    proxy never requires the file (configs are validated on machines without
    it): a column name outside the known ones is checked against the file
    only if the file is there. A missing file, unknown column or arch absent
    from the table is reported when scoring.

    The table is loaded once per (file, mtime) into a small module-level cache
    rather than kept on the instance: proxies are frozen, hashable settings
    objects that get compared, hashed and copied, and several of them (the
    200-epoch reference and the 12-epoch row) share one file.
    """

    unit = "NB201 benchmark value"

    path: str = ""
    column: str = "cifar10_test_200ep"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise ValueError(f"{self.name}: path must be a string (empty: the packaged table), got {self.path!r}")
        if not isinstance(self.column, str) or not self.column.strip():
            raise ValueError(f"{self.name}: column must be a non-empty string, got {self.column!r}")
        known = set(COMPACT_COLUMNS) | set(OFFICIAL_METRICS)
        if self.column not in known and resolve_table_path(self.path).exists():
            table = load_table(self.path)
            if self.column not in table.columns:
                raise ValueError(
                    f"{self.name}: unknown column {self.column!r} in {table.source}; available: {', '.join(table.columns)}"
                )

    def score(self, arch: str, ctx: ProxyContext) -> float:
        return load_table(self.path).lookup(arch, self.column)
