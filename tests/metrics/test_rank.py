"""Rank metrics against hand-computed cases."""

import math

import numpy as np
import pytest

from proxynas.metrics import (
    RankMetrics,
    bootstrap_ci,
    kendall,
    rank_metrics,
    spearman,
    topk_precision,
    topk_spearman,
)

PROXY = [1, 2, 3, 4, 5]
REF = [5, 6, 7, 8, 7]


def test_spearman_with_a_tie_by_hand():
    # ranks: proxy 1 2 3 4 5; ref 1 2 3.5 5 3.5 (the two 7s share 3.5)
    # deviations from the mean rank 3: proxy -2 -1 0 1 2; ref -2 -1 .5 2 .5
    # cov = 4 + 1 + 0 + 2 + 1 = 8; var_p = 10; var_r = 4 + 1 + .25 + 4 + .25 = 9.5
    # rho = 8 / sqrt(10 * 9.5) = 8 / sqrt(95)
    assert spearman(PROXY, REF) == pytest.approx(8 / math.sqrt(95))


def test_kendall_tau_b_with_a_tie_by_hand():
    # 10 pairs; ref: (3,5) tied 7=7, (4,5) discordant 8>7, the other 8 concordant
    # tau_b = (C - D) / sqrt((n0 - ties_proxy) * (n0 - ties_ref)) = (8 - 1) / sqrt(10 * 9)
    assert kendall(PROXY, REF) == pytest.approx(7 / math.sqrt(90))


@pytest.mark.parametrize("fn", [spearman, kendall])
def test_perfect_and_reversed_orderings(fn):
    ref = [0.1, 0.5, 0.2, 0.9, 0.7]
    assert fn([10, 50, 20, 90, 70], ref) == pytest.approx(1.0)
    assert fn([-10, -50, -20, -90, -70], ref) == pytest.approx(-1.0)


@pytest.mark.parametrize("fn", [spearman, kendall])
def test_constant_proxy_gives_nan_not_a_crash(fn):
    assert math.isnan(fn([3.0, 3.0, 3.0, 3.0], [1, 2, 3, 4]))


@pytest.mark.parametrize("n", [3, 7, 20, 100, 300])
def test_spearman_and_kendall_equal_scipys_with_ties_and_infinite_scores(n):
    import warnings

    from scipy import stats

    warnings.simplefilter("ignore", stats.ConstantInputWarning)  # scipy's NaN for a constant resample
    rng = np.random.default_rng(n)
    for trial in range(40):
        proxy = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.normal(size=n)
        ref = rng.integers(0, 3, n).astype(float) if trial % 3 == 0 else rng.normal(size=n)
        if trial % 5 == 0:
            proxy[: max(1, n // 3)] = -np.inf  # NASWOT's singular kernels: tied at -inf
        for ours, theirs in ((spearman(proxy, ref), stats.spearmanr(proxy, ref).statistic),
                             (kendall(proxy, ref), stats.kendalltau(proxy, ref, variant="b").statistic)):
            assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-12)


def test_topk_precision_by_hand():
    proxy = [0.9, 0.8, 0.1, 0.2]
    ref = [0.9, 0.1, 0.8, 0.2]
    # top-2 by proxy: {0, 1}; by ref: {0, 2}; overlap {0} -> 1/2
    assert topk_precision(proxy, ref, 2) == 0.5
    # top-1: both pick 0; top-3: proxy {0, 1, 3}, ref {0, 2, 3} -> 2/3; k = n -> everything
    assert topk_precision(proxy, ref, 1) == 1.0
    assert topk_precision(proxy, ref, 3) == pytest.approx(2 / 3)
    assert topk_precision(proxy, ref, 4) == 1.0
    # proxy top-2 {1, 3} misses both of the reference's {0, 2}
    assert topk_precision([0.0, 0.9, 0.1, 0.8], ref, 2) == 0.0


def test_topk_precision_rejects_bad_k():
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
        topk_precision([1, 2, 3, 4], [1, 2, 3, 4], 5)
    with pytest.raises(ValueError, match="k must be"):
        topk_precision([1, 2, 3, 4], [1, 2, 3, 4], 0)


def test_topk_spearman_sees_what_global_correlation_hides():
    ref = list(range(1, 11))
    proxy = [1, 2, 3, 4, 5, 6, 7, 10, 9, 8]  # the three best are exactly reversed
    # global: d = 0,...,0, 2, 0, -2 -> rho = 1 - 6 * 8 / (10 * (100 - 1)) = 1 - 48/990
    assert spearman(proxy, ref) == pytest.approx(1 - 48 / 990)
    # the reference's top 3 (ref 8, 9, 10) get proxy 10, 9, 8 -> perfectly reversed
    assert topk_spearman(proxy, ref, 3) == pytest.approx(-1.0)
    # top 4 (ref 7..10, proxy 7, 10, 9, 8): d = ranks(1 4 3 2) - (1 2 3 4) = 0 2 0 -2 -> 1 - 6*8/(4*15) = 0.2
    assert topk_spearman(proxy, ref, 4) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"k must be in \[3, 10\]"):
        topk_spearman(proxy, ref, 2)


def test_input_validation():
    with pytest.raises(ValueError, match=r"proxy\[1\] is NaN"):
        spearman([1.0, float("nan"), 3.0], [1, 2, 3])
    with pytest.raises(ValueError, match=r"ref\[2\] is NaN"):
        kendall([1, 2, 3], np.array([1.0, 2.0, np.nan]))
    with pytest.raises(ValueError, match="differ in length: 3 vs 4"):
        spearman([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="at least 3 architectures"):
        kendall([1, 2], [2, 1])
    with pytest.raises(ValueError, match="one-dimensional"):
        spearman([[1, 2, 3]], [[1, 2, 3]])


def _sample(n, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=n)
    return ref + noise * rng.normal(size=n), ref


def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_architectures():
    proxy, ref = _sample(300)
    point = spearman(proxy, ref)
    assert 0.4 < point < 0.9  # moderately correlated
    lo, hi = bootstrap_ci(spearman, proxy, ref, n_boot=300)
    assert lo < point < hi
    small_lo, small_hi = bootstrap_ci(spearman, proxy[:30], ref[:30], n_boot=300)
    assert hi - lo < small_hi - small_lo


def test_bootstrap_ci_is_seeded():
    proxy, ref = _sample(40)
    a = bootstrap_ci(kendall, proxy, ref, n_boot=200, seed=7)
    assert a == bootstrap_ci(kendall, proxy, ref, n_boot=200, seed=7)
    assert a != bootstrap_ci(kendall, proxy, ref, n_boot=200, seed=8)


def test_bootstrap_ci_wider_at_higher_confidence():
    proxy, ref = _sample(50)
    lo90, hi90 = bootstrap_ci(spearman, proxy, ref, n_boot=300, ci=0.9)
    lo99, hi99 = bootstrap_ci(spearman, proxy, ref, n_boot=300, ci=0.99)
    assert lo99 <= lo90 and hi90 <= hi99 and (hi99 - lo99) > (hi90 - lo90)


def test_bootstrap_skips_undefined_resamples():
    calls = []

    def flaky(p, r):
        calls.append(1)
        if len(calls) % 4 == 0:
            raise ValueError("undefined")
        return float("nan") if len(calls) % 4 == 1 else 0.5

    assert bootstrap_ci(flaky, [1, 2, 3], [1, 2, 3], n_boot=100) == (0.5, 0.5)  # 50 valid: enough
    lo, hi = bootstrap_ci(spearman, [1, 1, 1, 1], [1, 2, 3, 4], n_boot=50)  # never defined
    assert math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in bootstrap_ci(spearman, [1, 2, 3], [1, 2, 3], n_boot=0))
    with pytest.raises(ValueError, match=r"ci must be in \(0, 1\)"):
        bootstrap_ci(spearman, [1, 2, 3], [1, 2, 3], ci=1.0)


def test_rank_metrics_bundles_everything():
    proxy, ref = _sample(60, seed=3)
    m = rank_metrics(proxy, ref, k=10, n_boot=100, seed=1)
    assert isinstance(m, RankMetrics)
    assert (m.k, m.n) == (10, 60)
    assert m.spearman == spearman(proxy, ref) and m.kendall == kendall(proxy, ref)
    assert m.topk_precision == topk_precision(proxy, ref, 10)
    assert m.topk_spearman == topk_spearman(proxy, ref, 10)
    assert m.spearman_ci == bootstrap_ci(spearman, proxy, ref, n_boot=100, seed=1)
    flat = m.as_dict()
    for name in ("spearman", "kendall", "topk_precision", "topk_spearman"):
        assert flat[name] == getattr(m, name)
        assert (flat[f"{name}_lo"], flat[f"{name}_hi"]) == getattr(m, f"{name}_ci")
    assert flat["k"] == 10.0 and flat["n"] == 60.0
    assert all(isinstance(v, float) for v in flat.values())
    with pytest.raises(ValueError, match="k must be"):
        rank_metrics(proxy, ref, k=61)


def test_rank_metrics_constant_proxy_is_nan_not_a_crash():
    m = rank_metrics([1.0] * 6, [1, 2, 3, 4, 5, 6], k=3, n_boot=20)
    assert math.isnan(m.spearman) and math.isnan(m.kendall) and math.isnan(m.topk_spearman)
    assert all(math.isnan(v) for v in m.spearman_ci)
    assert m.topk_precision == 0.0  # ties broken by position: proxy keeps {0, 1, 2}, ref's best are {3, 4, 5}


def test_ndcg_by_hand_and_its_bounds():
    from proxynas.metrics import ndcg

    ref = [90.0, 80.0, 70.0, 60.0]  # gains 1, 2/3, 1/3, 0
    assert ndcg(ref, ref) == pytest.approx(1.0)
    # proxy order: archs 1, 0, 3, 2 -> DCG = 2/3 + 1/log2(3) + 0 + (1/3)/log2(5)
    dcg = 2 / 3 + 1 / math.log2(3) + (1 / 3) / math.log2(5)
    ideal = 1 + (2 / 3) / math.log2(3) + (1 / 3) / math.log2(4)
    assert ndcg([3.0, 4.0, 1.0, 2.0], ref) == pytest.approx(dcg / ideal)
    # at k=1 only the proxy's first pick counts: arch 1 gains 2/3 of the best
    assert ndcg([3.0, 4.0, 1.0, 2.0], ref, k=1) == pytest.approx(2 / 3)
    assert ndcg([-x for x in ref], ref) < ndcg([3.0, 4.0, 1.0, 2.0], ref) < 1.0
    with pytest.raises(ValueError, match="k"):
        ndcg(ref, ref, k=5)
