"""Few-shot combination: rows combined by a monotone model fit on K architectures whose reference is known.

Zero-cost and learning-curve scores are complementary, and a handful of
architectures with known accuracy is enough to weigh them: White, Zela, Ru,
Liu & Hutter, "How Powerful are Performance Predictors in Neural Architecture
Search?" (NeurIPS 2021, Sec. 5) combine cheap proxies with a model trained on
a few evaluated architectures (OMNI). The model here is deliberately small, so
K = 20 architectures suffice and the fit cannot memorise them: each row's
values become normalised ranks over the whole sample (no reference involved),
and non-negative least squares (Lawson & Hanson 1974; ``scipy.optimize.nnls``)
fits the K architectures' reference ranks from them. Non-negative weights keep
the combination monotone in every row: ranking higher on any row never lowers
an architecture's score.

The K architectures are a seeded uniform draw from the sample. Only the other
architectures are scored (:attr:`FewShotFit.held_out`): a fit evaluated on
the architectures it was fit to would overstate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from proxynas.metrics.aggregation import average_ranks

__all__ = ["FewShotFit", "few_shot_combination"]


@dataclass(frozen=True)
class FewShotFit:
    """Which architectures the model saw, its weights, and its values on the others."""

    #: indices (into the sample) of the K architectures whose reference the fit read, ascending
    fit_indices: tuple[int, ...]
    #: indices of every other architecture, ascending: the only ones scored
    held_out: tuple[int, ...]
    #: one non-negative weight per combined row
    weights: Mapping[str, float]
    #: the combination's value of each held-out architecture (order of ``held_out``)
    values: tuple[float, ...]


def few_shot_combination(
    columns: Mapping[str, Sequence[float]], reference: Sequence[float], *, k: int, seed: int
) -> FewShotFit:
    """Fit weights on ``k`` seeded-uniform architectures' reference ranks; score the others.

    ``columns`` maps row names to per-architecture values (same order as
    ``reference``). The reference is read at the fitted indices only.
    """
    lengths = {len(v) for v in columns.values()} | {len(reference)}
    if len(lengths) != 1:
        raise ValueError(f"every row and the reference must cover the same archs, got lengths {sorted(lengths)}")
    n = lengths.pop()
    if not 2 <= k < n - 1:
        raise ValueError(f"k={k} must be at least 2 and leave at least 2 of the {n} archs to score")
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=k, replace=False))
    held = np.setdiff1d(np.arange(n), fit_idx)
    names = list(columns)
    # ranks over the whole sample need only the proxies' values, never the reference
    features = np.stack([average_ranks(columns[name]) / n for name in names], axis=1)
    known = np.asarray([reference[i] for i in fit_idx], dtype=np.float64)
    target = average_ranks(known) / k
    x, y = features[fit_idx], target
    weights, _ = nnls(x - x.mean(0), y - y.mean())
    if not np.any(weights > 0):  # no row agrees with the K archs: fall back to an equal-weight sum
        weights = np.ones(len(names)) / len(names)
    values = features[held] @ weights
    return FewShotFit(
        fit_indices=tuple(int(i) for i in fit_idx),
        held_out=tuple(int(i) for i in held),
        weights={name: float(w) for name, w in zip(names, weights)},
        values=tuple(float(v) for v in values),
    )
