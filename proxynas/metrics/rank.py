"""How well a proxy's scores rank architectures like the reference accuracies.

Both ``proxy`` and ``ref`` are "higher is better" scores, one per architecture,
in the same order. NAS only needs the *order* right, so everything here is
rank-based: global Spearman and Kendall, and two top-k views, because a proxy
that orders the bulk well but shuffles the best architectures is of little
use for search. Percentile-bootstrap intervals say how much of a difference
between proxies could be due to which architectures happened to be sampled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "spearman",
    "kendall",
    "topk_precision",
    "topk_spearman",
    "ndcg",
    "bootstrap_ci",
    "rank_metrics",
    "RankMetrics",
]

Scores = Sequence[float] | np.ndarray
Metric = Callable[[np.ndarray, np.ndarray], float]

_MIN_N = 3
_MIN_VALID_FRACTION = 0.5  # of bootstrap resamples on which the metric must be defined


def _validate(proxy: Scores, ref: Scores) -> tuple[np.ndarray, np.ndarray]:
    """Both score vectors as float64 1-D arrays of equal length >= 3 without NaN."""
    arrays = []
    for label, values in (("proxy", proxy), ("ref", ref)):
        a = np.asarray(values, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError(f"{label} scores must be one-dimensional, got shape {a.shape}")
        nan = np.flatnonzero(np.isnan(a))
        if len(nan):
            raise ValueError(
                f"{label}[{nan[0]}] is NaN; drop or re-score that architecture before ranking"
            )
        arrays.append(a)
    p, r = arrays
    if len(p) != len(r):
        raise ValueError(f"proxy and ref differ in length: {len(p)} vs {len(r)} architectures")
    if len(p) < _MIN_N:
        raise ValueError(f"need at least {_MIN_N} architectures to compare rankings, got {len(p)}")
    return p, r


def _check_k(k: int, n: int, least: int) -> None:
    if not least <= k <= n:
        raise ValueError(f"k must be in [{least}, {n}] for {n} architectures, got {k}")


def _quiet(fn: Callable[[], float]) -> float:
    """Run a scipy correlation; constant input yields NaN (not a warning storm)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(fn())


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / denominator) if denominator > 0 else float("nan")


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average (``scipy.stats.rankdata``'s default, without its per-call overhead)."""
    order = np.argsort(a, kind="stable")
    ordered = a[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.empty(len(a), dtype=np.intp)
    dense[order] = np.cumsum(starts)
    bounds = np.r_[np.flatnonzero(starts), len(a)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(proxy: Scores, ref: Scores) -> float:
    """Spearman rank correlation (ties get average ranks); NaN if either side is constant.

    The Pearson correlation of the average ranks, as ``scipy.stats.spearmanr``
    computes it (the tests hold them equal); in numpy because the bootstrap
    calls it thousands of times and scipy's per-call overhead dominated.
    """
    p, r = _validate(proxy, ref)
    return _pearson(_average_ranks(p), _average_ranks(r))


#: up to this many architectures Kendall's tau counts all pairs in numpy (O(n^2) memory, fast
#: for the bootstrap's thousands of small calls); above it scipy's O(n log n) algorithm runs
_KENDALL_PAIRWISE_MAX = 256


def kendall(proxy: Scores, ref: Scores) -> float:
    """Kendall's tau-b (corrected for ties on either side); NaN if either side is constant.

    ``tau_b = (P - Q) / sqrt(n_p * n_r)``: concordant minus discordant pairs
    over the geometric mean of the pairs untied in the proxy and untied in the
    reference -- ``scipy.stats.kendalltau(variant="b")``, which the tests hold
    it equal to.
    """
    p, r = _validate(proxy, ref)
    if len(p) > _KENDALL_PAIRWISE_MAX:
        return _quiet(lambda: stats.kendalltau(p, r, variant="b").statistic)
    upper = np.triu_indices(len(p), 1)
    # comparisons, not differences: -inf scores (a singular NASWOT kernel) tie with each other
    sign_p = (p[:, None] > p[None, :]).astype(np.int8) - (p[:, None] < p[None, :])
    sign_r = (r[:, None] > r[None, :]).astype(np.int8) - (r[:, None] < r[None, :])
    sign_p, sign_r = sign_p[upper].astype(np.float64), sign_r[upper].astype(np.float64)  # int8 dot overflows
    untied = float(np.count_nonzero(sign_p)) * float(np.count_nonzero(sign_r))
    return float(np.dot(sign_p, sign_r)) / np.sqrt(untied) if untied > 0 else float("nan")


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest values; ties are broken by position (stable)."""
    return np.argsort(-values, kind="stable")[:k]


def topk_precision(proxy: Scores, ref: Scores, k: int) -> float:
    """Fraction of the reference's top ``k`` that the proxy also puts in its top ``k``.

    This is what a search that keeps the proxy's best ``k`` candidates actually
    gets. Ties at the cut-off are broken by position, so a constant proxy keeps
    the first ``k`` architectures.
    """
    p, r = _validate(proxy, ref)
    _check_k(k, len(p), 1)
    overlap = np.intersect1d(_top(p, k), _top(r, k))
    return len(overlap) / k


def topk_spearman(proxy: Scores, ref: Scores, k: int) -> float:
    """Spearman correlation among only the reference's top ``k`` architectures.

    Global correlation is dominated by easy calls (a broken cell vs a good
    one); this asks whether the proxy can still order the good ones.
    """
    p, r = _validate(proxy, ref)
    _check_k(k, len(p), _MIN_N)
    top = _top(r, k)
    return spearman(p[top], r[top])


def ndcg(proxy: Scores, ref: Scores, k: int | None = None) -> float:
    """Normalised discounted cumulative gain of the proxy's order, at ``k`` (default: all).

    ``DCG@k = sum_{i<=k} g(pi_i) / log2(i + 1)`` over the architectures in the
    proxy's order ``pi`` (Jarvelin & Kekalainen, ACM TOIS 2002), divided by the
    DCG of the reference's own order. The gain ``g`` is the reference value
    min-max scaled to [0, 1], so the worst architecture gains nothing and the
    metric does not sit near 1 merely because accuracies are all near 90%.
    Ties in the proxy are broken by position, as in :func:`topk_precision`.
    """
    p, r = _validate(proxy, ref)
    k = len(p) if k is None else k
    _check_k(k, len(p), 1)
    span = r.max() - r.min()
    gain = (r - r.min()) / span if span > 0 else np.ones_like(r)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float(np.sum(gain[_top(r, k)] * discount))
    return float(np.sum(gain[_top(p, k)] * discount)) / ideal if ideal > 0 else float("nan")


def bootstrap_ci(
    metric: Metric,
    proxy: Scores,
    ref: Scores,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``metric(proxy, ref)`` over architectures.

    Each resample draws ``n`` (proxy, ref) pairs with replacement, so the
    interval reflects which architectures were benchmarked. Resamples on which
    the metric is undefined (NaN, or ValueError, e.g. a constant resample) are
    skipped; if fewer than half of them remain the interval would describe a
    biased subset, so ``(nan, nan)`` is returned (also for ``n_boot=0``).
    """
    p, r = _validate(proxy, ref)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(p), size=len(p))
        try:
            value = float(metric(p[idx], r[idx]))
        except ValueError:
            continue
        if not np.isnan(value):
            values.append(value)
    if n_boot == 0 or len(values) < _MIN_VALID_FRACTION * n_boot:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class RankMetrics:
    """All rank metrics of one proxy against one reference, with bootstrap intervals."""

    spearman: float
    spearman_ci: tuple[float, float]
    kendall: float
    kendall_ci: tuple[float, float]
    topk_precision: float
    topk_precision_ci: tuple[float, float]
    topk_spearman: float
    topk_spearman_ci: tuple[float, float]
    k: int
    n: int

    _NAMES = ("spearman", "kendall", "topk_precision", "topk_spearman")

    def as_dict(self) -> dict[str, float]:
        """Flat ``{name: float}`` for metric loggers: ``spearman``, ``spearman_lo``, ``spearman_hi``, ..."""
        out: dict[str, float] = {}
        for name in self._NAMES:
            lo, hi = getattr(self, f"{name}_ci")
            out[name] = float(getattr(self, name))
            out[f"{name}_lo"] = float(lo)
            out[f"{name}_hi"] = float(hi)
        out["k"] = float(self.k)
        out["n"] = float(self.n)
        return out


def rank_metrics(
    proxy: Scores,
    ref: Scores,
    *,
    k: int,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> RankMetrics:
    """Every metric with its bootstrap interval; ``k`` must be in ``[3, n]``.

    All four intervals use the same ``seed``, hence the same resamples, so
    they are directly comparable.
    """
    p, r = _validate(proxy, ref)
    _check_k(k, len(p), _MIN_N)
    metrics: dict[str, Metric] = {
        "spearman": spearman,
        "kendall": kendall,
        "topk_precision": partial(topk_precision, k=k),
        "topk_spearman": partial(topk_spearman, k=k),
    }
    fields: dict[str, object] = {}
    for name, fn in metrics.items():
        fields[name] = fn(p, r)
        fields[f"{name}_ci"] = bootstrap_ci(fn, p, r, n_boot=n_boot, ci=ci, seed=seed)
    return RankMetrics(**fields, k=k, n=len(p))
