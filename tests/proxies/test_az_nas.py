import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from proxynas.config import load_config
from proxynas.errors import ConfigError
from proxynas.evaluation import score_all
from proxynas.proxies import PROXIES, AZNasProxy, ParamsProxy
from proxynas.proxies.az_nas import (
    COMPONENTS,
    block_features,
    block_trainability,
    isotropy_entropy,
    probe_spectral_norm,
    progressivity,
    rademacher_like,
)
from proxynas.spaces import SEARCH_SPACES
from proxynas.testing.proxies import ProxyContract
from tests.proxies.tiny import ALL_CONV, ALL_NONE, ARCH, SPACE, make_ctx, make_data

QUICKSTART = Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml"


@pytest.fixture(scope="module")
def ctx():
    return make_ctx(make_data(channels=3))


# -- expressivity / progressivity ----------------------------------------------------


@pytest.mark.parametrize("d", [2, 5, 16])
def test_isotropic_features_have_entropy_log_d(d):
    # +e_i and -e_i for every axis: zero mean, covariance I/d exactly
    eye = torch.eye(d)
    points = torch.cat([eye, -eye])  # [2d, d]
    assert isotropy_entropy(points) == pytest.approx(math.log(d), abs=1e-9)
    # the same samples laid out as batch x spatial positions of a [B, C, H, W] map
    fmap = points.T.reshape(1, d, 2 * d, 1)
    assert isotropy_entropy(fmap) == pytest.approx(math.log(d), abs=1e-9)


def test_rank_one_and_constant_features_have_entropy_zero():
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(8, generator=g)
    scale = torch.randn(32, 1, 5, 5, generator=g)
    rank_one = scale * direction.view(1, 8, 1, 1)  # every position is a multiple of one vector
    assert abs(isotropy_entropy(rank_one)) < 1e-6
    assert isotropy_entropy(torch.zeros(4, 8, 3, 3)) == 0.0
    anisotropic = torch.randn(4096, 4, generator=g) * torch.tensor([1.0, 1.0, 0.01, 0.01])
    assert 0.0 < isotropy_entropy(anisotropic) < math.log(2) + 0.01 < math.log(4)


def test_progressivity_is_the_smallest_consecutive_increase():
    assert progressivity([1.0, 3.0, 2.5, 4.0]) == pytest.approx(-0.5)
    assert progressivity([0.0, 1.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        progressivity([1.0])


# -- trainability --------------------------------------------------------------------


def _input(shape=(64, 8, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_(True)


def test_probe_of_an_identity_block_has_sigma_one():
    probe = rademacher_like(torch.empty(64, 8, 16, 16), torch.Generator().manual_seed(1))
    assert set(probe.unique().tolist()) == {-1.0, 1.0}
    assert probe_spectral_norm(probe, probe) == pytest.approx(1.0, abs=0.1)
    # the exact identity is the authors' special case: no transformation to train
    x = _input()
    sigma, score = block_trainability(x, x, torch.Generator().manual_seed(0))
    assert sigma == 1.0 and score == -math.inf


def test_orthogonal_and_scaled_blocks_give_sigma_one_and_the_scale():
    x = _input()
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(2)))
    orthogonal = F.conv2d(x, q.view(8, 8, 1, 1))
    sigma, score = block_trainability(x, orthogonal, torch.Generator().manual_seed(0))
    assert sigma == pytest.approx(1.0, abs=0.1) and -0.02 < score <= 0.0
    sigma, score = block_trainability(x, 3.0 * x, torch.Generator().manual_seed(0))
    assert sigma == pytest.approx(3.0, rel=0.1)
    assert score == pytest.approx(2.0 - sigma - 1.0 / sigma, abs=1e-5) and score < -1.0


def test_a_block_that_halves_the_resolution_is_aligned_by_pixel_unshuffle():
    # 2x2 average pooling: each output is 1/4 of 4 input pixels -> singular value sqrt(4 / 16) = 1/2
    x = _input()
    sigma, _ = block_trainability(x, F.avg_pool2d(x, 2), torch.Generator().manual_seed(0))
    assert sigma == pytest.approx(0.5, abs=0.05)
    odd = _input((64, 8, 9, 9))  # a ceil-mode reduction of an odd size (5x5 out) is padded, not refused
    sigma, _ = block_trainability(odd, F.avg_pool2d(odd, 2, ceil_mode=True), torch.Generator().manual_seed(0))
    assert 0.3 < sigma < 1.0


def test_a_block_that_ignores_its_input_scores_very_low():
    x = _input()
    sigma, score = block_trainability(x, x * 0.0, torch.Generator().manual_seed(0))
    assert sigma == 0.0 and score < -1e5


# -- rank aggregation ----------------------------------------------------------------


def test_log_rank_aggregation_matches_a_hand_computation():
    raw = [
        {"expressivity": 1.0, "progressivity": 0.2, "trainability": -0.5, "complexity": 100.0},
        {"expressivity": 3.0, "progressivity": 0.1, "trainability": -0.1, "complexity": 300.0},
        {"expressivity": 2.0, "progressivity": 0.3, "trainability": -0.1, "complexity": 100.0},
        {"expressivity": 4.0, "progressivity": 0.4, "trainability": -math.inf, "complexity": 200.0},
    ]
    # ranks (1 = worst, 4 = best; ties averaged):
    #   expressivity  1, 3, 2, 4     progressivity 2, 1, 3, 4
    #   trainability  2, 3.5, 3.5, 1 complexity    1.5, 4, 1.5, 3
    ranks = [(1, 2, 2, 1.5), (3, 1, 3.5, 4), (2, 3, 3.5, 1.5), (4, 4, 1, 3)]
    expected = [sum(math.log(r / 4) for r in row) for row in ranks]
    assert AZNasProxy().combine(raw) == pytest.approx(expected, abs=1e-12)
    assert AZNasProxy().combine(raw[:1]) == [0.0]  # alone, an arch is the best on every proxy
    with pytest.raises(ValueError, match="lacks component"):
        AZNasProxy().combine([{"expressivity": 1.0}])


def test_other_proxies_combine_to_their_raw_values():
    assert not ParamsProxy.combines and AZNasProxy.combines
    assert ParamsProxy().combine([3.0, 1.0]) == [3.0, 1.0]


# -- on networks ---------------------------------------------------------------------


def test_nb201_blocks_are_the_stem_then_every_cell_and_reduction(ctx):
    net = AZNasProxy().network(ARCH, ctx)
    x = AZNasProxy(batch_size=8).minibatch(ctx)
    feats = block_features(net, x)
    assert len(feats) == 1 + 3 + 2  # stem, 3 cells (N=1), 2 reductions
    assert [f.shape[1] for f in feats] == [4, 4, 8, 8, 16, 16]


def test_scores_are_finite_deterministic_and_seeded(ctx):
    proxy = AZNasProxy(batch_size=16)
    a, b = proxy.score(ARCH, ctx), proxy.score(ARCH, ctx)
    assert a == b and set(a) == set(COMPONENTS) and all(math.isfinite(v) for v in a.values())
    assert proxy.score(ARCH, make_ctx(make_data(), seed=1)) != a
    assert proxy.score(ALL_CONV, ctx)["complexity"] > a["complexity"]
    # inputs: data scores the zero-cost batch instead of noise; init: default keeps the space's weights
    assert AZNasProxy(batch_size=16, inputs="data").score(ARCH, ctx) != a
    assert AZNasProxy(batch_size=16, init="default").score(ARCH, ctx) != a
    with pytest.raises(ValueError, match="inputs"):
        AZNasProxy(inputs="images")


def test_scoring_leaves_the_global_rng_alone(ctx):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    AZNasProxy(batch_size=8).score(ARCH, ctx)
    assert torch.equal(torch.rand(3), expected)


def test_score_all_combines_the_population_identically_serial_and_in_workers(ctx):
    archs = [ARCH, ALL_CONV, ALL_NONE, *SPACE.sample(3, seed=0)]
    proxy = AZNasProxy(batch_size=16)
    serial = score_all(proxy, archs, ctx, workers=1)
    parallel = score_all(proxy, archs, ctx, workers=2)
    assert [r["arch"] for r in serial] == [r["arch"] for r in parallel] == archs
    values = [r["value"] for r in serial]
    assert all(math.isfinite(v) and v <= 0.0 for v in values)
    assert values == [r["value"] for r in parallel]
    for s, p in zip(serial, parallel):
        assert s["components"] == pytest.approx(p["components"], rel=1e-6)
        assert set(s["components"]) == set(COMPONENTS) and s["seconds"] > 0
    assert values == proxy.combine([r["components"] for r in serial])
    assert min(values) == values[archs.index(ALL_NONE)]  # a disconnected cell ranks last


def test_convnet_space_blocks_are_its_conv_groups():
    ctx = make_ctx(make_data(channels=1), space=SEARCH_SPACES.get("convnet720")())
    proxy = AZNasProxy(batch_size=8)
    arch = "depth=2|width=32|act=relu|norm=batchnorm|pool=maxpool"
    assert len(block_features(proxy.network(arch, ctx), proxy.minibatch(ctx))) == 1 + 2  # images + 2 blocks
    scores = proxy.score(arch, ctx)
    assert all(math.isfinite(v) for v in scores.values())


def test_a_network_without_known_blocks_is_refused_in_one_line():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ConfigError, match="cannot find them in Sequential") as err:
        block_features(net, torch.zeros(2, 3, 2, 2))
    assert "\n" not in str(err.value)


def test_search_objective_refuses_a_population_proxy(tmp_path):
    from proxynas.search import ProxyObjective

    config = load_config(
        QUICKSTART,
        ["baselines.az_nas={}", "run.device=cpu", f"run.cache_dir={tmp_path / 'cache'}",
         f"run.ledger=sqlite:///{tmp_path / 'ledger.db'}"],
    )
    assert isinstance(config.baselines["az_nas"], AZNasProxy)
    refusal = r"row .az_nas. \(az_nas\) ranks a population of archs.*use it in `proxynas run`"
    with pytest.raises(ConfigError, match=refusal):
        ProxyObjective.from_pipeline(config, "az_nas")
    # refused before any stage ran (nothing cached), and also when built directly
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    data = make_data()
    with pytest.raises(ConfigError, match=refusal):
        ProxyObjective(name="az_nas", space=SPACE, dataset=data, params={"proxy": AZNasProxy()},
                       device=torch.device("cpu"), summary=None, key="k")


def test_registered_with_its_settings():
    assert PROXIES.get("az_nas") is AZNasProxy
    proxy = AZNasProxy()
    assert (proxy.batch_size, proxy.inputs, proxy.init) == (64, "gaussian", "kaiming_normal")


class TestAZNasContract(ProxyContract):
    proxy = AZNasProxy(batch_size=16)
