"""Rank aggregation: several proxies' scores combined into one ranking, with no fitting.

The sum of log-ranks (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for
Network Architecture Search", CVPR 2024, Eq. 12) rewards a candidate that no
proxy ranks low: ``log(rank / N)`` falls off steeply at the bottom. It serves
AZ-NAS's own four components and a pipeline's ``combined`` rows alike.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["average_ranks", "log_rank_aggregate"]


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ascending ranks 1..N (1 = lowest), tied values sharing their average rank; NaN ranks lowest."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isnan(v), -np.inf, v)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    ranks = np.empty(len(v), dtype=np.float64)
    start = 0
    while start < len(v):
        end = start + 1
        while end < len(v) and sorted_v[end] == sorted_v[start]:
            end += 1
        ranks[order[start:end]] = (start + 1 + end) / 2.0  # mean of ranks start+1 .. end
        start = end
    return ranks


def log_rank_aggregate(columns: Mapping[str, Sequence[float]]) -> list[float]:
    """``sum over columns of log(rank / N)`` per candidate (Lee & Ham 2024, Eq. 12)."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"every proxy must score the same candidates, got lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    total = np.zeros(n, dtype=np.float64)
    for values in columns.values():
        total += np.log(average_ranks(values) / n)
    return [float(t) for t in total]
