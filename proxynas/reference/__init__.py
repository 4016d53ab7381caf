"""References from published benchmarks: the NAS-Bench-201 results table and its proxy.

Importing this package registers the ``nb201_table`` proxy in :data:`proxynas.proxies.PROXIES`.
"""

from proxynas.reference.nb201_table import (
    COMPACT_COLUMNS,
    OFFICIAL_METRICS,
    NB201Table,
    canonical_arch,
    clear_cache,
    export_csv,
    load_table,
)
from proxynas.reference.table_proxy import NB201TableProxy

__all__ = [
    "COMPACT_COLUMNS",
    "OFFICIAL_METRICS",
    "NB201Table",
    "NB201TableProxy",
    "canonical_arch",
    "clear_cache",
    "export_csv",
    "load_table",
]
