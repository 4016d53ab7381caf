"""Meta-learning distillers: DD (Wang et al. 2018), KIP (Nguyen et al. 2021), FRePo (Zhou et al. 2022).

Checks the shared KRR loss (survey eq. 5), the closed-form FC-ReLU NNGP/NTK
against Monte-Carlo estimates of wide random networks, that each method lowers
its own objective, divergence reporting, learned labels and determinism.
"""

import io
import math

import pytest
import torch

from proxynas.data.types import ImageData
from proxynas.distill.base import Summary, initial_images, seeded_convnet
from proxynas.distill.dd import DD
from proxynas.distill.frepo import FRePo
from proxynas.distill.kip import KIP, fc_relu_kernels
from proxynas.distill.krr import krr_loss, krr_predict, regression_targets
from proxynas.errors import DivergenceError

CPU = torch.device("cpu")
FAST = {
    "dd": {"iterations": 30, "width": 32, "depth": 2, "inner_steps": 5, "truncate": 5},
    "kip": {"iterations": 30},
    "frepo": {"iterations": 30, "width": 32, "depth": 2, "pool_size": 3, "max_online_steps": 10},
}
CLASSES = {"dd": DD, "kip": KIP, "frepo": FRePo}


def tiny(per_class=20, seed=0) -> ImageData:
    """3 separable 1x8x8 classes: a fixed random pattern per class plus small pixel noise."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(3, 1, 8, 8, generator=g)
    y = torch.arange(3).repeat_interleave(per_class)
    x = centres[y] + 0.5 * torch.randn(len(y), 1, 8, 8, generator=g)
    return ImageData(x, y, ("a", "b", "c"), (0.5,), (0.25,))


def make(name: str, **kwargs):
    return CLASSES[name](**{**FAST[name], **kwargs})


# -- kernel ridge regression ---------------------------------------------------
def test_regression_targets_are_centred_one_hot():
    t = regression_targets(torch.tensor([0, 2]), 3)
    assert torch.allclose(t, torch.tensor([[2 / 3, -1 / 3, -1 / 3], [-1 / 3, -1 / 3, 2 / 3]]))


def test_krr_regularisation_is_scaled_by_the_trace():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, generator=g, dtype=torch.float64)
    k_ss, k_ts, y_s = a @ a.T, torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g)
    pred = krr_predict(k_ts, k_ss, y_s, reg=0.1)
    assert torch.allclose(krr_predict(1e3 * k_ts, 1e3 * k_ss, y_s, reg=0.1), pred, atol=1e-5)
    ridge = 0.1 * torch.trace(k_ss) / 5
    expected = k_ts @ torch.linalg.solve(k_ss + ridge * torch.eye(5, dtype=torch.float64), y_s.double())
    assert torch.allclose(pred, expected.float(), atol=1e-5)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_kip_loss_vanishes_when_support_is_the_target(kernel):
    data = tiny()
    y = regression_targets(data.y, 3)
    kip = KIP(kernel=kernel, reg=1e-10)
    assert float(kip.objective(data.x, y, data.x, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(KIP(kernel=kernel).objective(data.x[::10], y[::10], data.x, y)) > 1e-4


def test_frepo_loss_vanishes_when_support_is_the_target():
    data = tiny(per_class=4)  # 12 images < 128 features, so K_ss is invertible
    y = regression_targets(data.y, 3)
    net = seeded_convnet(data, 0, CPU, width=32, depth=2)
    frepo = FRePo(reg=1e-10)
    assert float(frepo.objective(net, data.x, y, data.x, y)) == pytest.approx(0.0, abs=1e-5)
    assert float(frepo.objective(net, data.x[::4], y[::4], data.x, y)) > 1e-3


def test_krr_loss_is_half_squared_error_per_target():
    k = torch.eye(2, dtype=torch.float64)
    y_s, y_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    # reg=0: the prediction is y_s itself; 1/2 * (1 + 1) / 2 targets
    assert float(krr_loss(k, k, y_s, y_t, reg=0.0)) == pytest.approx(0.5)


# -- closed-form FC ReLU kernels -----------------------------------------------
DEPTH, W_VAR, B_VAR = 2, 2.0, 0.1


def points(n=6, dim=16, seed=0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("which", [0, 1])  # 0: NNGP, 1: NTK
def test_kernels_are_symmetric_psd(depth, which):
    x, z = points(), points(n=4, seed=1)
    k = fc_relu_kernels(x, x, depth, W_VAR, B_VAR)[which]
    assert torch.allclose(k, k.T, atol=1e-12)
    eig = torch.linalg.eigvalsh(k)
    assert eig.min() > -1e-10 * eig.max()
    cross = fc_relu_kernels(x, z, depth, W_VAR, B_VAR)[which]
    assert torch.allclose(cross, fc_relu_kernels(z, x, depth, W_VAR, B_VAR)[which].T, atol=1e-12)


def test_ntk_dominates_nngp_and_depth_zero_is_linear():
    x = points()
    nngp, ntk = fc_relu_kernels(x, x, DEPTH, W_VAR, B_VAR)
    assert torch.linalg.eigvalsh(ntk - nngp).min() > -1e-10  # Theta = Sigma + PSD terms
    lin_nngp, lin_ntk = fc_relu_kernels(x, x, 0, W_VAR, B_VAR)
    expected = W_VAR * x @ x.T / x.shape[1] + B_VAR
    assert torch.allclose(lin_nngp, expected) and torch.allclose(lin_ntk, expected)


def _random_layers(nets, dims, generator):
    """Standard-normal (weight, bias) per layer for ``nets`` independent networks."""
    return [
        (
            torch.randn(nets, d_in, d_out, generator=generator, dtype=torch.float64),
            torch.randn(nets, 1, d_out, generator=generator, dtype=torch.float64),
        )
        for d_in, d_out in zip(dims[:-1], dims[1:])
    ]


def _forward(layers, x):
    """NTK-parameterised ReLU MLP applied by every network at once: ``[nets, n, d_out]``."""
    h = x.expand(layers[0][0].shape[0], *x.shape)
    for i, (w, b) in enumerate(layers):
        if i > 0:
            h = torch.relu(h)
        h = math.sqrt(W_VAR) * h @ w / math.sqrt(w.shape[1]) + math.sqrt(B_VAR) * b
    return h


def rel_err(estimate, exact):
    return float((estimate - exact).norm() / exact.norm())


def test_nngp_matches_monte_carlo_over_random_init():
    """E[f(x) f(x')] over 256 random width-256 networks x 64 outputs."""
    x = points()
    nngp, ntk = fc_relu_kernels(x, x, DEPTH, W_VAR, B_VAR)
    layers = _random_layers(256, [x.shape[1], 256, 256, 64], torch.Generator().manual_seed(1))
    f = _forward(layers, x)
    estimate = torch.einsum("bio,bjo->ij", f, f) / (f.shape[0] * f.shape[2])
    assert rel_err(estimate, nngp) < 0.05
    assert rel_err(estimate, ntk) > 0.3  # the test can tell the kernels apart


def test_ntk_matches_empirical_ntk_of_wide_networks():
    """Mean over 64 width-256 networks of <df(x)/dtheta, df(x')/dtheta> (in chunks of 16 networks)."""
    x = points()
    nngp, ntk = fc_relu_kernels(x, x, DEPTH, W_VAR, B_VAR)
    generator = torch.Generator().manual_seed(2)
    estimate = torch.zeros_like(ntk)
    chunks, per_chunk = 4, 16
    for _ in range(chunks):
        layers = _random_layers(per_chunk, [x.shape[1], 256, 256, 1], generator)
        params = [t.requires_grad_(True) for layer in layers for t in layer]
        rows = []
        for i in range(len(x)):
            grads = torch.autograd.grad(_forward(layers, x[i : i + 1]).sum(), params)
            rows.append(torch.cat([g.flatten(1) for g in grads], dim=1))
        jac = torch.stack(rows, dim=1)  # [nets, n, params]
        estimate += torch.einsum("bip,bjp->ij", jac, jac) / (chunks * per_chunk)
    assert rel_err(estimate, ntk) < 0.05
    assert rel_err(estimate, nngp) > 0.3


# -- each method lowers its own objective --------------------------------------
def test_kip_lowers_krr_loss_on_the_whole_train_set():
    data, ipc = tiny(), 2
    kip = make("kip")
    start = initial_images(data, ipc, kip.init, torch.Generator().manual_seed(0), CPU)
    out = kip.distill(data, ipc, seed=0, device=CPU).data
    y_s, y_t = regression_targets(out.y, 3), regression_targets(data.y, 3)
    before = float(kip.objective(start, y_s, data.x, y_t))
    after = float(kip.objective(out.x, y_s, data.x, y_t))
    assert after < 0.5 * before


def test_frepo_lowers_feature_krr_loss_under_unseen_networks():
    data, ipc = tiny(), 2
    frepo = make("frepo")
    start = initial_images(data, ipc, frepo.init, torch.Generator().manual_seed(0), CPU)
    out = frepo.distill(data, ipc, seed=0, device=CPU).data
    y_s, y_t = regression_targets(out.y, 3), regression_targets(data.y, 3)
    nets = [seeded_convnet(data, s, CPU, width=frepo.width, depth=frepo.depth) for s in range(10_000, 10_005)]
    before = sum(float(frepo.objective(n, start, y_s, data.x, y_t)) for n in nets)
    after = sum(float(frepo.objective(n, out.x, y_s, data.x, y_t)) for n in nets)
    assert after < 0.8 * before


def test_dd_lowers_unrolled_loss_under_unseen_initialisations():
    """From noise, the learned images (with either step-size schedule) beat the initial ones on held-out inits."""
    data, ipc = tiny(), 2
    dd = make("dd", init="noise")
    start = initial_images(data, ipc, dd.init, torch.Generator().manual_seed(0), CPU)
    syn, learned_steps, history = dd.optimise(data, ipc, seed=0, device=CPU)
    assert learned_steps.shape == (dd.inner_steps,) and (learned_steps > 0).all()
    initial_steps = torch.full((dd.inner_steps,), dd.lr_inner)
    labels = torch.arange(3).repeat_interleave(ipc)

    def held_out(images, steps):
        nets = [seeded_convnet(data, s, CPU, width=dd.width, depth=dd.depth) for s in range(10_000, 10_005)]
        return sum(float(dd.unrolled_loss(n, images, labels, steps, data.x, data.y).detach()) for n in nets)

    before = held_out(start, initial_steps)
    assert held_out(syn, initial_steps) < 0.5 * before
    assert held_out(syn, learned_steps) < 0.2 * before
    assert torch.equal(dd.distill(data, ipc, seed=0, device=CPU).data.x, syn)


# -- DD unrolling --------------------------------------------------------------
@pytest.mark.parametrize("truncate", [2, 4])
def test_dd_truncation_cuts_gradients_of_early_steps(truncate):
    data = tiny()
    dd = DD(width=16, depth=2, inner_steps=4, truncate=truncate)
    net = seeded_convnet(data, 0, CPU, width=16, depth=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    syn = data.x[::10].clone().requires_grad_(True)
    steps = torch.full((4,), 0.1, requires_grad=True)
    loss = dd.unrolled_loss(net, syn, data.y[::10], steps, data.x, data.y)
    g_syn, g_steps = torch.autograd.grad(loss, [syn, steps])
    assert g_syn.abs().sum() > 0
    assert (g_steps[: 4 - truncate] == 0).all() and (g_steps[4 - truncate :] != 0).all()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the net is never trained


def test_dd_unrolling_trains_the_network():
    data = tiny()
    dd = DD(width=16, depth=2, inner_steps=5, truncate=5)
    net = seeded_convnet(data, 0, CPU, width=16, depth=2)
    no_steps = dd.unrolled_loss(net, data.x, data.y, torch.zeros(5), data.x, data.y)
    steps = dd.unrolled_loss(net, data.x, data.y, torch.full((5,), 0.5), data.x, data.y)
    assert float(steps.detach()) < float(no_steps.detach()) - 0.1


# -- divergence ------------------------------------------------------------------
OBJECTIVES = {"dd": "unrolled_loss", "kip": "objective", "frepo": "objective"}


@pytest.mark.parametrize("name", ["dd", "kip", "frepo"])
def test_nan_objective_raises_divergence_naming_lr_img(name, monkeypatch):
    """A NaN loss at iteration 3 stops the run with a one-line error naming the setting to lower."""
    cls, attr = CLASSES[name], OBJECTIVES[name]
    real, calls = getattr(cls, attr), []

    def poisoned(self, *args):
        calls.append(1)
        loss = real(self, *args)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(cls, attr, poisoned)
    match = rf"{name}: objective became nan at iteration 3; lower distill\.methods\.{name}\.lr_img"
    with pytest.raises(DivergenceError, match=match):
        make(name, iterations=5).distill(tiny(), 2, seed=0, device=CPU)


def test_dd_nan_step_size_names_lr_inner():
    match = r"dd: objective became nan at iteration 1; lower distill\.methods\.dd\.lr_inner"
    with pytest.raises(DivergenceError, match=match):
        make("dd", iterations=5, lr_inner=float("nan")).distill(tiny(), 2, seed=0, device=CPU)


# -- learned labels ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["kip", "frepo"])
def test_learned_labels_come_back_as_mse_soft_labels(name):
    data, ipc = tiny(), 2
    summary = make(name, learn_labels=True).distill(data, ipc, seed=0, device=CPU)
    assert isinstance(summary, Summary) and summary.label_loss == "mse"
    soft = summary.soft_labels
    assert soft.shape == (6, 3) and soft.dtype == torch.float32 and soft.device.type == "cpu"
    assert not soft.requires_grad and torch.isfinite(soft).all()
    init = regression_targets(summary.data.y, 3)
    assert not torch.equal(soft, init)  # the labels were learned
    assert torch.equal(soft.argmax(1), summary.data.y)  # on separable data they keep their class
    assert torch.equal(summary.data.y, torch.arange(3).repeat_interleave(ipc))


@pytest.mark.parametrize("name", ["kip", "frepo"])
def test_fixed_labels_give_no_soft_labels(name):
    summary = make(name).distill(tiny(), 2, seed=0, device=CPU)
    assert summary.soft_labels is None


def test_soft_labels_survives_the_stage_cache_round_trip():
    data = tiny()
    summary = Summary(data=data, method="kip", history=(1.0,), soft_labels=regression_targets(data.y, 3), label_loss="mse")
    buffer = io.BytesIO()
    torch.save({"summary": summary}, buffer)  # how proxynas.engine.cache stores stage outputs
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)["summary"]
    assert loaded.label_loss == "mse" and torch.equal(loaded.soft_labels, summary.soft_labels)
    assert torch.equal(loaded.data.x, data.x) and loaded.history == (1.0,)


def test_soft_labels_checks_label_shape():
    data = tiny()
    with pytest.raises(ValueError, match=r"soft_labels must be \[60, 3\]"):
        Summary(data=data, method="kip", soft_labels=torch.zeros(60, 2))


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (DD, {"iterations": 0}, "iterations must be an integer > 0"),
        (DD, {"truncate": 11}, r"truncate \(11\) must be <= inner_steps \(10\)"),
        (DD, {"lr_inner": 0.0}, "lr_inner must be > 0"),
        (DD, {"lr_img": float("nan")}, "lr_img must be > 0"),
        (DD, {"init": "zeros"}, "real, noise"),
        (KIP, {"kernel": "rbf"}, "ntk, nngp"),
        (KIP, {"reg": -1.0}, "reg must be >= 0"),
        (KIP, {"depth": 0}, "depth must be an integer > 0"),
        (KIP, {"learn_labels": "yes"}, "learn_labels must be true or false"),
        (KIP, {"batch_target": True}, "batch_target must be an integer > 0"),
        (FRePo, {"pool_size": 0}, "pool_size must be an integer > 0"),
        (FRePo, {"online_lr": -1.0}, "online_lr must be > 0"),
        (FRePo, {"max_online_steps": 1.5}, "max_online_steps must be an integer > 0"),
    ],
)
def test_bad_settings_rejected(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
