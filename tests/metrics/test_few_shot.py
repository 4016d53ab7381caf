from collections.abc import Sequence

import numpy as np
import pytest

from proxynas.metrics.few_shot import few_shot_combination
from proxynas.metrics.rank import spearman


class _Watched(Sequence):
    """A reference whose every read is recorded."""

    def __init__(self, values):
        self.values, self.read = list(values), set()

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        self.read.add(int(i))
        return self.values[i]


def _rows(n=60, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=n)
    return ref, {"good": ref + 0.1 * rng.normal(size=n), "noise": rng.normal(size=n)}


def test_the_fit_reads_the_reference_of_its_k_archs_only_and_scores_only_the_others():
    ref, rows = _rows()
    watched = _Watched(ref)
    fit = few_shot_combination(rows, watched, k=20, seed=3)
    assert len(fit.fit_indices) == 20 and len(fit.held_out) == 40 == len(fit.values)
    assert set(fit.fit_indices).isdisjoint(fit.held_out)
    assert sorted(fit.fit_indices + fit.held_out) == list(range(60))
    assert watched.read == set(fit.fit_indices)  # never a held-out arch's reference
    # so changing the held-out references changes nothing
    scrambled = ref.copy()
    scrambled[list(fit.held_out)] = np.random.default_rng(9).normal(size=40)
    assert few_shot_combination(rows, scrambled, k=20, seed=3) == fit
    # the draw is seeded and uniform: another seed fits other archs
    assert few_shot_combination(rows, ref, k=20, seed=4).fit_indices != fit.fit_indices


def test_the_monotone_model_weighs_the_informative_row():
    ref, rows = _rows()
    fit = few_shot_combination(rows, ref, k=20, seed=0)
    assert all(w >= 0 for w in fit.weights.values())
    assert fit.weights["good"] > 5 * fit.weights["noise"]
    held = list(fit.held_out)
    assert spearman(np.array(fit.values), ref[held]) > 0.9


def test_rows_that_disagree_with_the_k_archs_fall_back_to_equal_weights():
    ref = np.arange(30.0)
    fit = few_shot_combination({"a": -ref, "b": -ref}, ref, k=10, seed=0)
    assert fit.weights == {"a": 0.5, "b": 0.5}


@pytest.mark.parametrize("k", [1, 29, 30])
def test_k_must_leave_archs_to_score(k):
    with pytest.raises(ValueError, match="k="):
        few_shot_combination({"a": list(range(30))}, list(range(30)), k=k, seed=0)
