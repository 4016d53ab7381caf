"""RFAD (Loo et al., NeurIPS 2022): the contract, the random-feature NNGP, the Platt loss, AdaBelief and the loop.

The kernel is checked against the closed-form NNGP of a one-block ConvNet
(3x3 conv, ReLU, 2x2 average pool, read-out), written out here independently
with the arc-cosine formula (Cho & Saul 2009).
"""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from proxynas.distill.base import DISTILLERS
from proxynas.distill.krr import regression_targets
from proxynas.distill.rfad import RFAD, AdaBelief, RandomConvNets, nngp_estimate, platt_loss
from proxynas.numerics import draw_seed
from proxynas.testing.distillers import DistillerContract, assert_resumes_bit_identically, tiny_images

CPU = torch.device("cpu")
#: a fast instance: small networks and batches, validation every 4 iterations
FAST = dict(
    iterations=12, models=2, width=16, depth=2, batch_target=32, target_batches=2,
    validate_every=4, validation_per_class=10, validation_models=2, lr_img=0.01,
)


class TestRFADContract(DistillerContract):
    # learned labels: checks the soft labels too; the default transform and best-set selection are on
    distiller = RFAD(**FAST, learn_labels=True)


def draw(count: int, width: int, depth: int, seed: int = 1, in_channels: int = 2) -> RandomConvNets:
    return RandomConvNets.draw(torch.Generator().manual_seed(seed), in_channels, count=count, width=width,
                               depth=depth, weight_var=2.0, bias_var=0.01, device=CPU)


def one_block_nngp(x: torch.Tensor, weight_var: float, bias_var: float) -> torch.Tensor:
    """The exact NNGP of conv3x3 (pad 1) -> ReLU -> avgpool 2x2 -> linear read-out, for ``[N, C, H, W]`` inputs.

    Pre-activations at positions p, q are jointly Gaussian with covariance
    ``sigma_w^2 <patch_p(x), patch_q(x')> / fan_in + sigma_b^2``; ReLU maps it
    to the degree-1 arc-cosine kernel; a pooled feature averages its window's
    4 x 4 position pairs; the read-out averages over features.
    """
    n, c, h, w = x.shape
    patches = F.unfold(x, 3, padding=1)  # [N, C*9, H*W]
    fan_in = c * 9
    cov = weight_var / fan_in * torch.einsum("aip,biq->abpq", patches, patches) + bias_var
    var = weight_var / fan_in * (patches**2).sum(1) + bias_var
    norm = torch.sqrt(var[:, None, :, None] * var[None, :, None, :])
    cos = (cov / norm).clamp(-1, 1)
    theta = torch.arccos(cos)
    relu_cov = norm * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)
    window = torch.tensor([(i // 2) * (w // 2) + j // 2 for i in range(h) for j in range(w)])
    pool = F.one_hot(window).to(x.dtype) / 4
    pooled = torch.einsum("abpq,pw,qw->abw", relu_cov, pool, pool)
    return weight_var * pooled.mean(-1) + bias_var


# -- the random-feature kernel ------------------------------------------------------------


def test_random_feature_kernel_approaches_the_exact_nngp_as_networks_are_added():
    x = torch.randn(5, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = one_block_nngp(x, 2.0, 0.01)

    def error(count: int) -> float:
        phi = draw(count, width=16, depth=1)(x)
        return float((nngp_estimate(phi, phi, 2.0, 0.01) - exact).abs().max() / exact.abs().max())

    few, many = error(1), error(400)
    assert many < 0.02, f"400 networks still {many:.3f} off the exact NNGP"
    assert many < few / 4  # Monte-Carlo error falls like 1/sqrt(M): 20x fewer features, ~4.5x the error


def test_networks_run_side_by_side_equal_each_network_run_alone():
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    nets = draw(3, width=5, depth=3)
    alone = []
    for m in range(3):
        rows = slice(5 * m, 5 * (m + 1))
        single = RandomConvNets(tuple((w[rows], b[rows]) for w, b in nets.layers), 1)
        alone.append(single(x))
    # each network's features are scaled by 1/sqrt(F), all of them together by 1/sqrt(3F)
    assert torch.allclose(nets(x), torch.cat(alone, dim=1) / math.sqrt(3), atol=1e-6)


def test_random_networks_have_the_nngp_weight_variances():
    nets = draw(4, width=64, depth=2, in_channels=3)
    (w0, b0), (w1, b1) = nets.layers
    assert tuple(w0.shape) == (256, 3, 3, 3) and tuple(w1.shape) == (256, 64, 3, 3)
    assert w0.var().item() == pytest.approx(2.0 / 27, rel=0.1)
    assert w1.var().item() == pytest.approx(2.0 / 576, rel=0.05)
    assert torch.cat([b0, b1]).var().item() == pytest.approx(0.01, rel=0.15)


# -- the losses -----------------------------------------------------------------------------


def test_platt_loss_is_cross_entropy_of_the_scaled_predictions():
    pred = torch.tensor([[1.0, 0.0], [0.2, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    log_scale = torch.tensor(math.log(2.0), dtype=torch.float64)
    # logits [2, 0] for class 0 and [0.4, 1.0] for class 1
    by_hand = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-0.6))) / 2
    assert platt_loss(pred, labels, log_scale).item() == pytest.approx(by_hand, rel=1e-12)
    # a larger scale sharpens correct predictions, so the loss falls
    assert platt_loss(pred, labels, log_scale + 1).item() < by_hand


def test_mse_objective_vanishes_when_the_support_is_the_target():
    data = tiny_images(per_class=(2, 2, 2))
    method = RFAD(loss="mse", reg=1e-10)
    phi = draw(2, width=16, depth=2, in_channels=1)(data.x.double())
    y = regression_targets(data.y, 3)
    zero = torch.zeros((), dtype=torch.float64)
    assert method.objective(phi, y, zero, phi, data.y).item() == pytest.approx(0.0, abs=1e-8)
    half = slice(0, 6, 2)
    assert method.objective(phi[half], y[half], zero, phi, data.y).item() > 1e-3


def test_the_objective_falls_on_tiny_data():
    """Judged by a kernel the run never saw: networks of another seed, the whole training set as target."""
    data = tiny_images()
    method = RFAD(**{**FAST, "iterations": 40, "select_best": False})
    nets = draw(8, width=32, depth=2, seed=1234, in_channels=1)
    phi_t = nets(data.x)
    zero = torch.zeros((), dtype=torch.float64)

    def loss(images: torch.Tensor) -> float:
        return method.objective(nets(images), regression_targets(torch.arange(3).repeat_interleave(2), 3),
                                zero, phi_t, data.y).item()

    distilled = loss(method.distill(data, 2, seed=0, device=CPU).data.x)
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):  # random real subsets with 2 images per class, like the initial set
        picks = torch.cat([torch.nonzero(data.y == k).flatten()[torch.randperm(20, generator=generator)[:2]]
                           for k in range(3)])
        assert distilled < loss(data.x[picks])


# -- AdaBelief ------------------------------------------------------------------------------


def test_adabelief_follows_its_update_rule():
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = AdaBelief([p], lr=0.1, betas=(0.5, 0.75), eps=1e-3)
    m = s = 0.0
    expected = 1.0
    for t, g in enumerate([2.0, -1.0, 0.5], start=1):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        m = 0.5 * m + 0.5 * g
        s = 0.75 * s + 0.25 * (g - m) ** 2 + 1e-3
        expected -= 0.1 / (1 - 0.5**t) * m / (math.sqrt(s / (1 - 0.75**t)) + 1e-3)
        assert p.item() == pytest.approx(expected, rel=1e-12)


# -- the loop ------------------------------------------------------------------------------


def test_the_returned_set_is_the_iterate_with_the_best_validation_score():
    data = tiny_images()
    # MSE: the validation score needs no Platt factor, which a summary does not carry
    method = RFAD(**{**FAST, "lr_img": 0.1, "validate_every": 2, "loss": "mse"}, learn_labels=True)
    selected = method.distill(data, 2, seed=0, device=CPU)
    plain = dataclasses.replace(method, select_best=False)
    iterates = {n: dataclasses.replace(plain, iterations=n).distill(data, 2, seed=0, device=CPU) for n in range(2, 13, 2)}
    assert selected.history == iterates[12].history  # the validation draws leave the training draws alone
    # distill() takes the validation seed first from its generator
    score = method._validation(data, data.x, data.y, draw_seed(torch.Generator().manual_seed(0)), CPU)
    zero = torch.zeros((), dtype=torch.float64)
    scores = {n: score(run.data.x, run.soft_labels, zero) for n, run in iterates.items()}
    best = iterates[min(scores, key=scores.get)]
    assert torch.equal(selected.data.x, best.data.x) and torch.equal(selected.soft_labels, best.soft_labels)


def test_training_stops_once_validation_stops_improving_and_resumes_identically():
    data = tiny_images()
    method = RFAD(**{**FAST, "iterations": 60, "validate_every": 1, "patience": 2, "lr_img": 0.3})
    calls = []
    summary = method.distill(data, 2, seed=0, device=CPU, progress=lambda done, total, **info: calls.append(done))
    stopped = len(summary.history)
    assert 3 <= stopped < 60
    assert calls[-1] == 60  # reported done
    assert_resumes_bit_identically(method, data, 2, at=stopped // 2)


def test_without_the_transform_or_platt_factor_the_loop_still_runs():
    data = tiny_images()
    for settings in ({"lr_transform": 0.0}, {"loss": "mse"}, {"optimizer": "adam"}):
        summary = RFAD(**{**FAST, **settings}).distill(data, 2, seed=0, device=CPU)
        assert torch.isfinite(summary.data.x).all() and len(summary.history) == 12


# -- paper settings ------------------------------------------------------------------------


def test_the_defaults_are_the_released_cifar10_run():
    assert DISTILLERS.get("rfad") is RFAD
    for ipc in (1, 10, 50):
        assert RFAD.paper("cifar10", ipc) == RFAD()
    protocol = RFAD.paper_protocol
    assert protocol.zca and protocol.augment == "none" and protocol.loss == "mse" and protocol.labels == "learned"
