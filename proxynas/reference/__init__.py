"""References from published benchmarks: the NAS-Bench-201 results table and its proxy.

The compact table of all 15,625 NAS-Bench-201 cells ships with the package
(``data/nb201_results.csv.gz``, provenance and licence in ``data/README.md``);
:func:`default_table_path` is where it is, and every table setting left empty
refers to it. Importing this package registers the ``nb201_table`` proxy in
:data:`proxynas.proxies.PROXIES`.
"""

from proxynas.reference.nb201_table import (
    COMPACT_COLUMNS,
    OFFICIAL_METRICS,
    NB201Table,
    canonical_arch,
    clear_cache,
    default_table_path,
    export_csv,
    load_table,
    resolve_table_path,
)
from proxynas.reference.table_proxy import NB201TableProxy

__all__ = [
    "COMPACT_COLUMNS",
    "OFFICIAL_METRICS",
    "NB201Table",
    "NB201TableProxy",
    "canonical_arch",
    "clear_cache",
    "default_table_path",
    "export_csv",
    "load_table",
    "resolve_table_path",
]
