import math

import numpy as np
import pytest
import torch
from torch import nn

from proxynas.proxies import PROXIES, ZERO_COST_PROXIES, count_macs
from proxynas.proxies.jacob_cov import eigen_score, jacobian_correlation_score
from proxynas.proxies.naswot import hamming_kernel, log_abs_det
from proxynas.proxies.zero_cost_batch import build_network, draw_batch, strip_batchnorm
from tests.proxies.tiny import ALL_CONV, ALL_NONE, ARCH, make_ctx, make_data


@pytest.fixture(scope="module")
def ctx():
    return make_ctx(make_data(channels=3))


def test_registry_holds_all_zero_cost_proxies():
    assert set(ZERO_COST_PROXIES) == {
        "synflow", "naswot", "jacob_cov", "snip", "grad_norm", "fisher", "flops", "az_nas"
    }
    assert set(ZERO_COST_PROXIES) <= set(PROXIES.names())
    for name in ZERO_COST_PROXIES:
        assert PROXIES.get(name).unit


@pytest.mark.parametrize("name", ["snip", "grad_norm", "fisher", "naswot", "jacob_cov"])
def test_data_dependent_proxies_take_a_batch_size(name, ctx):
    cls = PROXIES.get(name)
    assert cls().batch_size == 64
    small = cls(batch_size=8).score(ARCH, ctx)
    assert math.isfinite(small) and small != cls(batch_size=32).score(ARCH, ctx)
    with pytest.raises(ValueError):
        cls(batch_size=0)


def test_scoring_leaves_the_global_rng_alone(ctx):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    PROXIES.get("snip")().score(ARCH, ctx)
    assert torch.equal(torch.rand(3), expected)


def test_seed_changes_the_initialisation():
    data = make_data()
    snip = PROXIES.get("snip")()
    assert snip.score(ARCH, make_ctx(data, seed=0)) != snip.score(ARCH, make_ctx(data, seed=1))


def test_draw_batch_is_seeded_and_capped():
    data = make_data(n=40).train
    x1, y1 = draw_batch(data, 16, seed=3)
    x2, y2 = draw_batch(data, 16, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and len(x1) == 16
    assert not torch.equal(x1, draw_batch(data, 16, seed=4)[0])
    assert len(draw_batch(data, 1000, seed=0)[0]) == 40


# -- synflow ---------------------------------------------------------------------


def test_synflow_does_not_depend_on_the_images():
    synflow = PROXIES.get("synflow")()
    one = synflow.score(ARCH, make_ctx(make_data(seed=0)))
    other = synflow.score(ARCH, make_ctx(make_data(seed=1, n=17)))
    assert one == other > 0


def test_synflow_removes_batchnorm_and_prefers_more_convolutions(ctx):
    net = strip_batchnorm(build_network(ARCH, ctx))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    synflow = PROXIES.get("synflow")()
    assert synflow.score(ALL_CONV, ctx) > synflow.score(ARCH, ctx) > synflow.score(ALL_NONE, ctx) == 0.0


# -- flops -----------------------------------------------------------------------


def test_count_macs_matches_the_conv_formula():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    assert count_macs(nn.Sequential(conv), (3, 9, 9)) == 8 * 5 * 5 * 3 * 3 * 3
    grouped = nn.Conv2d(4, 6, kernel_size=(3, 1), groups=2, bias=False)
    assert count_macs(nn.Sequential(grouped), (4, 7, 7)) == 6 * 5 * 7 * (4 // 2) * 3 * 1
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    assert count_macs(mlp, (3, 2, 2)) == 12 * 5 + 5 * 2


def test_count_macs_restores_the_training_mode():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    count_macs(net, (1, 5, 5))
    assert net.training


def test_flops_ranks_cells_by_their_convolutions(ctx):
    flops = PROXIES.get("flops")()
    assert flops.score(ALL_NONE, ctx) < flops.score(ARCH, ctx) < flops.score(ALL_CONV, ctx)


def test_flops_of_the_network_matches_a_hand_count():
    # C=4, N=1 on 1x8x8 with 10 classes, all-none cells: only stem, reductions, classifier.
    ctx = make_ctx(make_data(channels=1))
    stem = 4 * 8 * 8 * 1 * 9
    red1 = 8 * 4 * 4 * 4 * 9 + 8 * 4 * 4 * 8 * 9 + 8 * 4 * 4 * 4  # conv_a, conv_b, shortcut 1x1
    red2 = 16 * 2 * 2 * 8 * 9 + 16 * 2 * 2 * 16 * 9 + 16 * 2 * 2 * 8
    assert PROXIES.get("flops")().score(ALL_NONE, ctx) == stem + red1 + red2 + 16 * 10


# -- gradient saliencies -----------------------------------------------------------


@pytest.mark.parametrize("name", ["snip", "grad_norm", "fisher"])
def test_gradient_proxies_are_positive_for_connected_and_nonnegative_always(name, ctx):
    proxy = PROXIES.get(name)()
    assert proxy.score(ARCH, ctx) > 0
    assert proxy.score(ALL_CONV, ctx) > 0
    assert proxy.score(ALL_NONE, ctx) >= 0


def test_snip_and_grad_norm_are_zero_when_the_output_ignores_the_weights(ctx):
    # A disconnected cell feeds zeros to the classifier: no weight gets a gradient.
    assert PROXIES.get("snip")().score(ALL_NONE, ctx) == 0.0
    assert PROXIES.get("grad_norm")().score(ALL_NONE, ctx) == 0.0


def test_fisher_per_weight_weights_channels_by_fan_in(ctx):
    per_weight = PROXIES.get("fisher")(per_weight=True).score(ARCH, ctx)
    per_channel = PROXIES.get("fisher")(per_weight=False).score(ARCH, ctx)
    assert per_weight > per_channel > 0


# -- naswot ----------------------------------------------------------------------


def test_naswot_kernel_counts_agreements(ctx):
    net = build_network(ARCH, ctx)
    x, _ = draw_batch(ctx.train_data, 16, seed=0)
    k = hamming_kernel(net, x)
    assert k.shape == (16, 16)
    assert torch.allclose(k, k.T)
    # every unit agrees with itself, so the diagonal is N_A and the maximum of K
    n_units = k[0, 0].item()
    assert torch.all(k.diagonal() == n_units) and k.max().item() == n_units
    assert np.isfinite(log_abs_det(k))


def test_naswot_is_larger_for_distinct_than_for_repeated_inputs(ctx):
    net = build_network(ARCH, ctx)
    distinct, _ = draw_batch(ctx.train_data, 16, seed=0)
    repeated = distinct[:1].repeat(16, 1, 1, 1)
    k_distinct, k_repeated = hamming_kernel(net, distinct), hamming_kernel(net, repeated)
    # identical codes: every entry is N_A and the kernel is singular
    assert torch.all(k_repeated == k_repeated[0, 0])
    assert log_abs_det(k_distinct) > log_abs_det(k_repeated)
    assert math.isfinite(log_abs_det(k_distinct))


# -- jacob_cov ---------------------------------------------------------------------


def test_jacob_cov_prefers_uncorrelated_jacobians():
    g = torch.Generator().manual_seed(0)
    independent = torch.randn(8, 200, generator=g, dtype=torch.float64)
    base = torch.randn(1, 200, generator=g, dtype=torch.float64)
    correlated = base + 0.01 * torch.randn(8, 200, generator=g, dtype=torch.float64)
    assert jacobian_correlation_score(independent) > jacobian_correlation_score(correlated)
    # identity correlation is the best case: eigenvalues all 1
    assert math.isclose(eigen_score(np.ones(8)), -8 * (math.log(1 + 1e-5) + 1 / (1 + 1e-5)))


def test_jacob_cov_scores_an_input_independent_network_lowest(ctx):
    jacob = PROXIES.get("jacob_cov")()
    dead = jacob.score(ALL_NONE, ctx)
    assert math.isfinite(dead)
    assert dead < jacob.score(ARCH, ctx)
    # the batch is all 40 images: the score of 40 fully correlated Jacobians
    assert dead == jacobian_correlation_score(torch.zeros(40, 3, 8, 8))


def test_naswot_units_piecewise_linear_codes_leaky_relu_networks(ctx):
    from proxynas.proxies.naswot import UNIT_TYPES

    leaky = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.LeakyReLU(0.01),
                                torch.nn.Linear(32, 10))
    relu = torch.nn.Sequential(*leaky[:2], torch.nn.ReLU(), leaky[3])
    x = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    # the paper's units: a network without ReLUs has no code, and a singular (zero) kernel
    assert torch.all(hamming_kernel(leaky, x) == 0) and log_abs_det(hamming_kernel(leaky, x)) == -math.inf
    # its LeakyReLU cuts at 0 as a ReLU does: the same codes, the same kernel as the ReLU twin's
    coded = hamming_kernel(leaky, x, UNIT_TYPES["piecewise_linear"])
    assert torch.equal(coded, hamming_kernel(relu, x)) and coded[0, 0].item() == 32
    sigmoid = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.Sigmoid())
    assert torch.all(hamming_kernel(sigmoid, x, UNIT_TYPES["piecewise_linear"]) == 0)


def test_naswot_units_setting_is_keyed_only_when_set():
    from proxynas.engine.keys import canonicalize
    from proxynas.proxies import NaswotProxy

    assert canonicalize(NaswotProxy()) == canonicalize(NaswotProxy(units="relu"))
    assert canonicalize(NaswotProxy()) != canonicalize(NaswotProxy(units="piecewise_linear"))
    with pytest.raises(ValueError, match="units"):
        NaswotProxy(units="sigmoid")
