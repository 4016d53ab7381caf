"""Gradient matching (DC eq. 10), DC/DSA, DCC/DSAC (Lee et al. 2022) and IDC (Kim et al. 2022)."""

import copy
import math

import pytest
import torch

from proxynas.augment import DEFAULT_STRATEGY
from proxynas.data.types import ImageData
from proxynas.distill import DC, DCC, IDC
from proxynas.distill.base import seeded_convnet
from proxynas.distill.dc import DSAMatching
from proxynas.distill.dcc import DSAC, dcc_loops
from proxynas.distill.gradient_matching import (
    class_gradient,
    dc_loops,
    gradient_distance,
    joint_gradient,
    layer_distance,
)
from proxynas.distill.idc import decode, encode, tile_spans, to_normalised, to_pixels
from proxynas.errors import DivergenceError

CPU = torch.device("cpu")
# depth 2 keeps a 2x2 map on 8x8 images; tiny loops keep each run well under a second.
SMALL = {"width": 32, "depth": 2, "batch_real": 20, "match_steps": 2}
DC_FAST = {**SMALL, "iterations": 20, "net_epochs": 1}
IDC_FAST = {**SMALL, "iterations": 20, "net_steps": 1, "batch_net": 20}


def tiny(per_class=20, seed=0) -> ImageData:
    """3 separable classes of 1x8x8 images: a fixed pattern per class plus small noise."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(3, 1, 8, 8, generator=g)
    y = torch.arange(3).repeat_interleave(per_class)
    x = centres[y] + 0.5 * torch.randn(len(y), 1, 8, 8, generator=g)
    return ImageData(x, y, ("a", "b", "c"), (0.5,), (0.25,))


def fake_grads(seed=0):
    """Gradients shaped like a ConvNet's: conv weight, bias, norm affine, linear weight, bias."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 1, 3, 3), (8,), (8,), (3, 32), (3,)]
    return [torch.randn(s, generator=g) for s in shapes]


# ----------------------------------------------------------------- distance
@pytest.mark.parametrize("metric", ["cos", "mse", "l1"])
def test_distance_zero_for_identical_positive_otherwise_and_symmetric(metric):
    a, b = fake_grads(0), fake_grads(1)
    assert float(gradient_distance(a, a, metric=metric)) == pytest.approx(0.0, abs=1e-5)
    ab = float(gradient_distance(a, b, metric=metric))
    assert ab > 0
    assert float(gradient_distance(b, a, metric=metric)) == pytest.approx(ab, rel=1e-6)


def test_cosine_distance_is_sum_over_output_nodes_of_one_minus_cos():
    # Two output nodes: one aligned (cos 1 -> 0), one opposite (cos -1 -> 2); scale does not matter.
    real = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    syn = torch.tensor([[2.0, 4.0], [-0.5, 0.5 / 3]])
    assert float(layer_distance(real, syn, "cos")) == pytest.approx(2.0, abs=1e-6)
    # A conv weight [out, in, kh, kw] has one row per output channel: orthogonal rows give 1 each.
    conv_a = torch.zeros(2, 1, 2, 2)
    conv_b = torch.zeros(2, 1, 2, 2)
    conv_a[:, 0, 0, 0] = 1.0
    conv_b[:, 0, 1, 1] = 1.0
    assert float(layer_distance(conv_a, conv_b, "cos")) == pytest.approx(2.0, abs=1e-6)


def test_distance_skips_biases_and_optionally_fc_layers():
    a, b = fake_grads(0), fake_grads(1)
    only_bias_changed = [a[0], b[1], b[2], a[3], b[4]]
    assert float(gradient_distance(a, only_bias_changed)) == pytest.approx(0.0, abs=1e-5)
    assert float(gradient_distance(a, only_bias_changed, include_bias=True)) > 0
    only_fc_changed = [a[0], a[1], a[2], b[3], a[4]]
    assert float(gradient_distance(a, only_fc_changed, metric="mse")) > 0
    assert float(gradient_distance(a, only_fc_changed, metric="mse", include_fc=False)) == 0.0


def test_distance_rejects_mismatched_gradients():
    a = fake_grads(0)
    with pytest.raises(ValueError, match="shapes differ"):
        gradient_distance(a, [g.t() if g.ndim == 2 else g for g in a])
    with pytest.raises(ValueError, match="got 5 real and 4"):
        gradient_distance(a, a[:4])


# ----------------------------------------------------------------------- DC
def held_out_objective(method, data: ImageData, images: torch.Tensor, ipc: int) -> float:
    """The method's objective on all real images vs ``images`` at 5 networks never used in training."""
    real = [data.of_class(k) for k in range(data.num_classes)]
    syn = list(images.split(ipc))
    total = 0.0
    for s in range(10_000, 10_005):
        net = seeded_convnet(data, s, CPU, width=method.width, depth=method.depth).requires_grad_(True)
        real_grads = [class_gradient(net, r, k, create_graph=False) for k, r in enumerate(real)]
        syn_grads = [class_gradient(net, x, k, create_graph=False) for k, x in enumerate(syn)]
        total += float(method.objective(real_grads, syn_grads))
    return total / 5


@pytest.mark.parametrize("init", ["noise", "real"])
def test_dc_lowers_its_matching_objective(init):
    data, ipc = tiny(), 2
    dc = DC(init=init, dsa="none", **DC_FAST)
    start = dc.initial_images(data, ipc, torch.Generator().manual_seed(0), CPU)
    summary = dc.distill(data, ipc, seed=0, device=CPU)
    before = held_out_objective(dc, data, start, ipc)
    after = held_out_objective(dc, data, summary.data.x, ipc)
    assert after < 0.8 * before
    history = summary.history
    assert len(history) == 20 and sum(history[-5:]) < sum(history[:5])


def test_dc_starts_from_noise_by_default_and_dsa_from_real_images():
    data = tiny()
    start = DC(**DC_FAST).initial_images(data, 2, torch.Generator().manual_seed(0), CPU)
    assert torch.equal(start, torch.randn(start.shape, generator=torch.Generator().manual_seed(0)))
    real = DSAMatching(**DC_FAST).initial_images(data, 2, torch.Generator().manual_seed(0), CPU)
    for i, image in enumerate(real):
        matches = (data.x == image).flatten(1).all(dim=1)
        assert matches.any() and (data.y[matches] == i // 2).all()


def test_dsa_is_dc_with_siamese_augmentation():
    assert DC().dsa == "none" and DSAMatching().dsa == DEFAULT_STRATEGY
    data = tiny()
    plain = DC(**DC_FAST, init="real").distill(data, 2, seed=0, device=CPU)
    dsa = DSAMatching(**DC_FAST).distill(data, 2, seed=0, device=CPU)
    assert dsa.method == "dsa" and not torch.equal(plain.data.x, dsa.data.x)


def test_dc_loops_follow_the_paper_table():
    assert [dc_loops(i) for i in (1, 10, 20, 30, 40, 50)] == [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15), (50, 10)]
    assert dc_loops(2) == (2, 1) and dc_loops(100) == (50, 10)
    assert DC().steps_for(10) == 10 and DC().epochs_for(10) == 50
    assert DC(match_steps=3, net_epochs=4).steps_for(10) == 3 and DC(net_epochs=4).epochs_for(10) == 4
    # DCC's released table differs from DC's only at ipc 1
    assert dcc_loops(1) == (10, 5) and all(dcc_loops(i) == dc_loops(i) for i in (2, 10, 20, 50, 100))
    assert (DCC().steps_for(1), DCC().epochs_for(1)) == (10, 5)


@pytest.mark.parametrize("cls", [DC, DSAMatching, DCC, DSAC])
def test_presets_run_the_loops_the_defaults_choose_at_their_ipc(cls):
    # a preset spells out the loop counts; they must be the ones the method's own table gives for that ipc
    for ipc in (1, 10, 50):
        paper, default = cls.paper("cifar10", ipc), cls()
        assert (paper.steps_for(ipc), paper.epochs_for(ipc)) == (default.steps_for(ipc), default.epochs_for(ipc))
        assert (paper.init, paper.dsa) == (default.init, default.dsa)


@pytest.mark.parametrize("cls", [DC, DSAMatching, DCC, DSAC, IDC])
def test_a_method_that_matches_with_augmentation_is_evaluated_with_it(cls):
    augments = cls().dsa != "none"
    assert (cls.paper_protocol.augment != "none") == augments
    assert cls.paper_protocol.epochs == (1000 if augments else 300)


# ---------------------------------------------------------------------- DCC
def test_dcc_matches_the_class_averaged_gradient_and_differs_from_dc():
    data = tiny()
    net = seeded_convnet(data, 0, CPU, width=32, depth=2).requires_grad_(True)
    real = [data.of_class(k) for k in range(3)]
    syn = [data.of_class(k)[:2].flip(-1) for k in range(3)]
    real_grads = [class_gradient(net, r, k, create_graph=False) for k, r in enumerate(real)]
    syn_grads = [class_gradient(net, s, k, create_graph=False) for k, s in enumerate(syn)]

    # The joint gradient is the mean of the per-class gradients (one backward pass).
    joint = joint_gradient(net, real, create_graph=False)
    for j, *per_class in zip(joint, *real_grads):
        assert torch.allclose(j, torch.stack(per_class).mean(0), atol=1e-6)

    dcc, dc = DCC(), DC()
    expected = gradient_distance(joint, joint_gradient(net, syn, create_graph=False))
    assert float(dcc.objective(real_grads, syn_grads)) == pytest.approx(float(expected), rel=1e-5)
    assert float(dcc.matching_loss(net, real, syn).detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(dcc.objective(real_grads, syn_grads)) != pytest.approx(float(dc.objective(real_grads, syn_grads)))
    # DC sums one distance per class; DCC takes one distance of the sums.
    per_class = sum(float(gradient_distance(r, s)) for r, s in zip(real_grads, syn_grads))
    assert float(dc.objective(real_grads, syn_grads)) == pytest.approx(per_class, rel=1e-5)


def test_dcc_summary_differs_from_dc_with_same_seed():
    data = tiny()
    a = DC(init="real", **DC_FAST).distill(data, 2, seed=0, device=CPU)
    b = DCC(outer_warmup=0, **DC_FAST).distill(data, 2, seed=0, device=CPU)
    assert b.method == "dcc"
    assert not torch.equal(a.data.x, b.data.x)
    assert sum(b.history[-5:]) < sum(b.history[:5])


def test_dcc_warm_up_minimises_dc_loss_on_the_first_steps_of_the_first_iterations():
    data = tiny()
    net = seeded_convnet(data, 0, CPU, width=32, depth=2).requires_grad_(True)
    real = [data.of_class(k) for k in range(3)]
    syn = [data.of_class(k)[:2].flip(-1) for k in range(3)]
    dcc = DCC(outer_warmup=2, inner_warmup=3)
    dc_loss = float(DC().matching_loss(net, real, syn).detach())
    dcc_loss = float(dcc.matching_loss(net, real, syn).detach())
    assert dc_loss != pytest.approx(dcc_loss)
    # (iteration 1-based, matching step 0-based): DC's loss while both are inside the warm-up
    for iteration, step, expected in [(1, 0, dc_loss), (2, 2, dc_loss), (2, 3, dcc_loss), (3, 0, dcc_loss)]:
        got = float(dcc.step_loss(net, real, syn, iteration=iteration, step=step).detach())
        assert got == pytest.approx(expected, rel=1e-5), (iteration, step)


def test_a_dcc_run_inside_its_warm_up_is_dc_and_without_it_is_not():
    data = tiny()
    settings = {**DC_FAST, "iterations": 4, "init": "real"}
    dc = DC(**settings).distill(data, 2, seed=0, device=CPU)
    warm = DCC(**settings, outer_warmup=4, inner_warmup=settings["match_steps"]).distill(data, 2, seed=0, device=CPU)
    assert torch.equal(warm.data.x, dc.data.x) and warm.history == dc.history
    cold = DCC(**settings, outer_warmup=0).distill(data, 2, seed=0, device=CPU)
    assert not torch.equal(cold.data.x, dc.data.x)


# ---------------------------------------------------------------------- IDC
def test_decode_yields_factor_squared_full_resolution_images_tile_major():
    # Stored image whose 2x2 tiles are constant 0, 1, 2, 3 decodes to four constant images.
    stored = torch.zeros(1, 1, 8, 8)
    stored[..., :4, 4:] = 1
    stored[..., 4:, :4] = 2
    stored[..., 4:, 4:] = 3
    out = decode(stored, 2)
    assert out.shape == (4, 1, 8, 8)
    for k in range(4):
        assert torch.allclose(out[k], torch.full((1, 8, 8), float(k)))
    assert decode(torch.randn(5, 3, 32, 32), 3).shape == (45, 3, 32, 32)
    assert tile_spans(32, 3) == [(0, 11), (11, 11), (22, 10)]


def test_factor_one_is_plain_storage():
    x = torch.randn(6, 1, 8, 8)
    assert decode(x, 1) is x
    assert torch.equal(encode(x, 1), x)
    data = tiny()
    idc = IDC(factor=1, **IDC_FAST)
    assert idc.images_per_class(3) == 3
    stored = idc.initial_images(data, 3, torch.Generator().manual_seed(0), CPU)
    images = idc.decode(stored, data, 3)
    assert torch.allclose(images, to_normalised(stored, data))
    for i, image in enumerate(images):  # real init stores real images of the right class, as raw pixels
        matches = torch.isclose(data.x, image, atol=1e-5).flatten(1).all(dim=1)
        assert matches.any() and (data.y[matches] == i // 3).all()
    assert idc.stored_numbers(stored, 3) is None  # IDC-I stores its images


def test_encode_then_decode_gives_blurred_originals_in_order():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randn(8, 1, 2, 2, generator=g), size=(8, 8), mode="bilinear")
    restored = decode(encode(smooth, 2), 2)
    assert restored.shape == smooth.shape
    errors = [(restored[i] - smooth[i]).abs().mean() for i in range(8)]
    others = [(restored[i] - smooth[(i + 1) % 8]).abs().mean() for i in range(8)]
    assert all(e < o for e, o in zip(errors, others))


def test_idc_ipc_is_the_storage_budget():
    data, ipc = tiny(), 2
    idc = IDC(factor=2, **IDC_FAST)
    assert idc.images_per_class(ipc) == 8
    stored = idc.initial_images(data, ipc, torch.Generator().manual_seed(0), CPU)
    assert stored.shape == (3 * ipc, 1, 8, 8)
    decoded = idc.decode(stored.requires_grad_(True), data, ipc)
    assert decoded.shape == (3 * 8, 1, 8, 8)
    decoded.sum().backward()  # the decoder is differentiable: gradients reach the stored pixels
    assert stored.grad is not None and stored.grad.abs().sum() > 0

    summary = idc.distill(data, ipc, seed=0, device=CPU)
    assert summary.data.x.shape == (3 * 8, 1, 8, 8)
    assert torch.equal(summary.data.y, torch.arange(3).repeat_interleave(8))
    assert summary.stored_numbers == summary.storage == 3 * ipc * 8 * 8 == summary.data.x.numel() // 4
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25  # pixels stay in [0, 1] before normalisation
    assert summary.data.x.min() >= lo - 1e-6 and summary.data.x.max() <= hi + 1e-6
    assert sum(summary.history[-5:]) < sum(summary.history[:5])


def pixel_data(per_class=20, seed=0) -> ImageData:
    """3 classes of 1x8x8 images whose raw pixels lie in [0.1, 0.9], normalised with mean 0.5, std 0.25."""
    g = torch.Generator().manual_seed(seed)
    centres = 0.2 + 0.6 * torch.rand(3, 1, 8, 8, generator=g)
    y = torch.arange(3).repeat_interleave(per_class)
    pixels = (centres[y] + 0.05 * torch.randn(len(y), 1, 8, 8, generator=g)).clamp(0.1, 0.9)
    return ImageData((pixels - 0.5) / 0.25, y, ("a", "b", "c"), (0.5,), (0.25,))


def test_idc_update_equals_a_raw_pixel_step():
    # One matching step of one network: the stored tensor moves by -lr * dL/d(raw pixels), with
    # lr = lr_img * ipc / 10, and the summary is that tensor decoded and normalised.
    data, ipc = pixel_data(), 2
    seen = {}

    class Spy(IDC):
        def step_loss(self, net, real, syn, *, iteration, step):
            seen["net"], seen["real"] = copy.deepcopy(net), [r.clone() for r in real]
            return super().step_loss(net, real, syn, iteration=iteration, step=step)

    settings = {"iterations": 1, "match_steps": 1, "dsa": "none", "width": 16, "depth": 2, "batch_real": 20}
    summary = Spy(**settings).distill(data, ipc, seed=0, device=CPU)
    idc = IDC(**settings)
    start = idc.initial_images(data, ipc, torch.Generator().manual_seed(0), CPU)  # the run's first draw
    assert start.min() >= 0 and start.max() <= 1  # raw pixels, untouched by the clamp
    pixels = start.clone().requires_grad_(True)
    syn = idc.decode(pixels, data, ipc).split(idc.images_per_class(ipc))
    (grad,) = torch.autograd.grad(idc.matching_loss(seen["net"], seen["real"], list(syn)), [pixels])
    lr = idc.lr_img * ipc / 10
    assert idc.image_lr(ipc) == pytest.approx(lr)
    raw_step = (start - lr * grad).clamp(0, 1)
    assert (raw_step - start).abs().max() > 1e-3, "the step must be visible for the test to mean anything"
    assert torch.allclose(summary.data.x, idc.decode(raw_step, data, ipc), atol=1e-6)
    # the same lr on normalised pixels moves them std**2 = 1/16 as far: not what IDC does
    normalised_step = to_pixels(to_normalised(start, data) - lr * grad * 0.25, data).clamp(0, 1)
    assert not torch.allclose(summary.data.x, idc.decode(normalised_step, data, ipc), atol=1e-4)


def test_idc_paper_image_step_scales_with_the_storage_budget():
    # released tune_lr_img: lr_img 5e-3 at 10 stored images per class, proportional to ipc
    steps = {ipc: IDC.paper("cifar10", ipc).image_lr(ipc) for ipc in (1, 10, 50)}
    assert steps == pytest.approx({1: 5e-4, 10: 5e-3, 50: 2.5e-2})


def test_idc_pretrains_the_matched_network_on_real_data():
    data = tiny()
    real_x, real_y = data.x, data.y
    g = torch.Generator().manual_seed(0)
    fresh, _ = IDC(pretrain_epochs=0, **IDC_FAST).new_network(data, real_x, real_y, 7, CPU, g, 1)
    trained, _ = IDC(pretrain_epochs=3, **IDC_FAST).new_network(data, real_x, real_y, 7, CPU, g, 1)
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(trained(real_x), real_y)) < float(loss(fresh(real_x), real_y))


# ------------------------------------------------------------ shared checks
@pytest.mark.parametrize("cls,fast", [(DC, DC_FAST), (DCC, DC_FAST), (IDC, IDC_FAST)])
def test_nan_image_learning_rate_names_the_setting(cls, fast):
    name = cls.name
    expected = rf"{name}: objective became nan at iteration 1; lower distill\.methods\.{name}\.lr_img"
    with pytest.raises(DivergenceError, match=expected):
        cls(**{**fast, "lr_img": float("nan")}).distill(tiny(), 2, seed=0, device=CPU)


@pytest.mark.parametrize("cls,fast", [(DC, DC_FAST), (IDC, IDC_FAST)])
def test_nan_network_learning_rate_names_lr_net(cls, fast):
    with pytest.raises(DivergenceError, match=rf"lower distill\.methods\.{cls.name}\.lr_net"):
        cls(**{**fast, "lr_net": float("nan")}).distill(tiny(), 2, seed=0, device=CPU)


def test_history_progress_and_global_rng_untouched():
    calls = []
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    dc = DC(**{**DC_FAST, "iterations": 12, "log_every": 5})
    summary = dc.distill(tiny(), 2, seed=0, device=CPU, progress=lambda d, t, **info: calls.append((d, t, info)))
    assert torch.equal(torch.rand(3), expected)
    assert len(summary.history) == 12 and all(math.isfinite(v) for v in summary.history)
    assert [c[:2] for c in calls] == [(5, 12), (10, 12), (12, 12)]
    assert all(c[2]["loss"] == summary.history[c[0] - 1] for c in calls)


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (DC, {"iterations": 0}, "iterations must be an integer > 0"),
        (DC, {"match_steps": 0}, "match_steps must be an integer > 0"),
        (DC, {"net_epochs": -1}, "net_epochs must be an integer > 0"),
        (DC, {"lr_img": 0.0}, "lr_img must be > 0"),
        (DC, {"lr_net": -1.0}, "lr_net must be > 0"),
        (DC, {"momentum_img": 1.0}, "momentum_img"),
        (DC, {"metric": "l3"}, "cos, mse, l1"),
        (DC, {"init": "zeros"}, "real, noise"),
        (DCC, {"dsa": "color_blur"}, "color, crop, cutout, flip, scale, rotate"),
        (IDC, {"factor": 0}, "factor must be an integer > 0"),
        (IDC, {"pretrain_epochs": -1}, "pretrain_epochs must be an integer >= 0"),
        (IDC, {"net_steps": 0}, "net_steps must be an integer > 0"),
        (DCC, {"outer_warmup": -1}, "outer_warmup must be an integer >= 0"),
        (DSAC, {"inner_warmup": 1.5}, "inner_warmup must be an integer >= 0"),
    ],
)
def test_bad_settings_rejected(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
