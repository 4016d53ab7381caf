"""Meta-learning distillers: DD (Wang et al. 2018), KIP (Nguyen et al. 2021), FRePo (Zhou et al. 2022).

Checks the shared KRR loss (survey eq. 5), the closed-form FC-ReLU NNGP/NTK
against Monte-Carlo estimates of wide random networks, that each method lowers
its own objective, the pieces each takes from its released code (DD's step
batches, per-step rates and schedule; FRePo's network, LAMB, cosine schedule,
flip, label margin and pool resets; KIP's class-balanced targets and KRR
evaluation), divergence reporting, learned labels and determinism.
"""

import io
import math

import pytest
import torch

from proxynas.data.types import ImageData
from proxynas.distill import dd as dd_module
from proxynas.distill import frepo as frepo_module
from proxynas.distill.base import Summary, initial_images
from proxynas.distill.dd import DD, AlexCifarNet, seeded_alexcifarnet, step_batches
from proxynas.distill.frepo import FRePo, FRePoConvNet, Lamb, label_margin_penalty, seeded_frepo_net
from proxynas.distill.kip import KIP, fc_relu_kernels
from proxynas.distill.krr import krr_loss, krr_predict, regression_targets
from proxynas.errors import ConfigError, DivergenceError

CPU = torch.device("cpu")
FAST = {
    "dd": {"iterations": 30, "network": "convnet", "width": 16, "depth": 2, "distill_epochs": 2, "lr_img": 0.1,
           "lr_inner": 0.1},
    "kip": {"iterations": 30},
    "frepo": {"iterations": 30, "width": 16, "depth": 2, "pool_size": 3, "max_online_steps": 10, "lr_img": 0.01},
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
    data = tiny(per_class=4)  # 12 images < 288 features, so K_ss is invertible
    y = regression_targets(data.y, 3)
    net = seeded_frepo_net(data, 0, CPU, width=16, depth=2, norm="batch").eval()
    frepo = FRePo(reg=1e-10)
    with torch.no_grad():
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
    frepo = make("frepo", learn_labels=False)
    start = initial_images(data, ipc, frepo.init, torch.Generator().manual_seed(0), CPU)
    out = frepo.distill(data, ipc, seed=0, device=CPU).data
    # the support labels the images were learned with: centred one-hot / sqrt(K / 10)
    y_s, y_t = frepo.initial_labels(3, ipc, CPU), regression_targets(data.y, 3)
    nets = [frepo.network(data, s, CPU).eval() for s in range(10_000, 10_005)]
    with torch.no_grad():
        before = sum(float(frepo.objective(n, *frepo.support(start, y_s), data.x, y_t)) for n in nets)
        after = sum(float(frepo.objective(n, *frepo.support(out.x, y_s), data.x, y_t)) for n in nets)
    assert after < 0.5 * before


def held_out_dd_loss(dd: DD, data: ImageData, images: torch.Tensor, ipc: int, rates: torch.Tensor) -> float:
    """The unrolled real-data loss summed over 5 learners DD never drew."""
    batches = step_batches(images, ipc, dd.images_per_step)
    nets = [dd.learner(data, s, CPU) for s in range(10_000, 10_005)]
    return sum(float(dd.unrolled_loss(n, batches, rates, data.x, data.y).detach()) for n in nets)


def test_dd_lowers_unrolled_loss_under_unseen_initialisations():
    """From noise, the learned images (with either step-size schedule) beat the initial ones on held-out inits."""
    data, ipc = tiny(), 2
    dd = make("dd", init="noise")
    start = initial_images(data, ipc, dd.init, torch.Generator().manual_seed(0), CPU)
    syn, learned_steps, history = dd.optimise(data, ipc, seed=0, device=CPU)
    assert learned_steps.shape == (dd.inner_steps(ipc),) == (4,) and (learned_steps > 0).all()
    initial_steps = torch.full((4,), dd.lr_inner)
    before = held_out_dd_loss(dd, data, start, ipc, initial_steps)
    assert held_out_dd_loss(dd, data, syn, ipc, initial_steps) < 0.7 * before
    assert held_out_dd_loss(dd, data, syn, ipc, learned_steps) < 0.5 * before
    assert not torch.allclose(learned_steps, initial_steps)  # the step sizes were learned
    assert torch.equal(dd.distill(data, ipc, seed=0, device=CPU).data.x, syn)


def test_dd_replay_trains_as_the_unrolled_loop_does():
    """Replaying the learned schedule (the paper's evaluation) reaches the unrolled loop's real loss."""
    data, ipc = tiny(), 2
    dd = make("dd", iterations=5)
    syn, steps, _ = dd.optimise(data, ipc, seed=0, device=CPU)
    net = dd.learner(data, 123, CPU)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trained = dd.replay(net, syn, ipc, steps)
    unrolled = dd.unrolled_loss(net, step_batches(syn, ipc, 1), steps, data.x, data.y)
    with torch.no_grad():
        replayed = torch.nn.functional.cross_entropy(trained(data.x), data.y)
    assert float(replayed) == pytest.approx(float(unrolled.detach()), rel=1e-4)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # a copy was trained
    assert not torch.equal(trained.state_dict()["classifier.weight"], before["classifier.weight"])


# -- DD's step batches and schedule ----------------------------------------------
def test_dd_step_batches_take_each_class_in_turn():
    syn = torch.arange(3 * 4, dtype=torch.float32).view(12, 1, 1, 1)  # 3 classes x ipc 4, classes in order
    batches = step_batches(syn, ipc=4, images_per_step=2)
    assert len(batches) == 2
    first, labels = batches[0]
    assert first.flatten().tolist() == [0, 1, 4, 5, 8, 9] and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert batches[1][0].flatten().tolist() == [2, 3, 6, 7, 10, 11]


def test_dd_inner_loop_cycles_through_the_step_batches():
    """With 2 batches x 2 epochs and only the last step tracked, only the last step's batch gets a gradient."""
    data = tiny()
    dd = DD(network="convnet", width=16, depth=2, distill_epochs=2, truncate=1)
    net = dd.learner(data, 0, CPU)
    syn = data.x[::10].clone().requires_grad_(True)  # 6 images: classes 0, 0, 1, 1, 2, 2 for ipc 2
    loss = dd.unrolled_loss(net, step_batches(syn, 2, 1), torch.full((4,), 0.1), data.x, data.y)
    (grad,) = torch.autograd.grad(loss, [syn])
    per_image = grad.abs().flatten(1).sum(1)
    assert (per_image[1::2] > 0).all() and (per_image[0::2] == 0).all()  # step 4 uses batch 2 (index 1 of each class)


@pytest.mark.parametrize("truncate", [2, 4])
def test_dd_truncation_cuts_gradients_of_early_steps(truncate):
    data = tiny()
    dd = DD(network="convnet", width=16, depth=2, distill_epochs=4, truncate=truncate)
    net = dd.learner(data, 0, CPU)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    syn = data.x[::20].clone().requires_grad_(True)  # ipc 1: one step batch, 4 steps
    steps = torch.full((4,), 0.1, requires_grad=True)
    loss = dd.unrolled_loss(net, step_batches(syn, 1, 1), steps, data.x, data.y)
    g_syn, g_steps = torch.autograd.grad(loss, [syn, steps])
    assert g_syn.abs().sum() > 0
    assert (g_steps[: 4 - truncate] == 0).all() and (g_steps[4 - truncate :] != 0).all()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the net is never trained


def test_dd_unrolling_trains_the_network():
    data = tiny()
    dd = DD(network="convnet", width=16, depth=2)
    net = dd.learner(data, 0, CPU)
    batches = [(data.x, data.y)]
    no_steps = dd.unrolled_loss(net, batches, torch.zeros(5), data.x, data.y)
    steps = dd.unrolled_loss(net, batches, torch.full((5,), 0.5), data.x, data.y)
    assert float(steps.detach()) < float(no_steps.detach()) - 0.1


def test_dd_halves_its_image_lr_every_decay_period(monkeypatch):
    rates = []
    real_descend = dd_module.descend

    def recording(optimizer, *args, **kwargs):
        rates.append(optimizer.param_groups[0]["lr"])
        return real_descend(optimizer, *args, **kwargs)

    monkeypatch.setattr(dd_module, "descend", recording)
    make("dd", iterations=5, decay_every=2, lr_img=0.08).distill(tiny(), 1, seed=0, device=CPU)
    assert rates == pytest.approx([0.08, 0.08, 0.04, 0.04, 0.02])


def test_dd_step_layout_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"images_per_step \(2\) must divide distill\.ipc \(3\)"):
        make("dd", images_per_step=2).distill(tiny(), 3, seed=0, device=CPU)
    with pytest.raises(ConfigError, match=r"truncate \(5\) exceeds the 4 inner steps"):
        make("dd", truncate=5).distill(tiny(), 2, seed=0, device=CPU)


def test_alexcifarnet_fits_any_image_size_with_xavier_init():
    assert AlexCifarNet(3, 10, (32, 32))(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert AlexCifarNet(3, 10, (32, 32)).classifier[0].in_features == 64 * 8 * 8  # the released code's 4096
    data = tiny()
    net = seeded_alexcifarnet(data, 0, CPU)
    assert net(data.x).shape == (60, 3)
    fc = net.classifier[0]
    assert torch.equal(fc.bias, torch.zeros_like(fc.bias))
    xavier_std = math.sqrt(2.0 / (fc.in_features + fc.out_features))
    assert float(fc.weight.std()) == pytest.approx(xavier_std, rel=0.1)
    assert isinstance(DD().learner(data, 0, CPU), AlexCifarNet)  # the default learner


def test_dd_default_network_distills_a_finite_summary():
    summary = DD(iterations=2, lr_inner=0.1).distill(tiny(), 1, seed=0, device=CPU)
    assert torch.isfinite(summary.data.x).all() and summary.learned_lr is None and len(summary.history) == 2


# -- FRePo's released-code pieces ------------------------------------------------
def test_frepo_network_doubles_its_width_and_normalises_between_blocks():
    net = FRePoConvNet(3, 10, (32, 32), width=128, depth=3, norm="batch")
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512]
    assert [n.num_features for n in norms] == [128, 256]  # none before the first convolution
    assert net.embed_dim == 512 * 4 * 4 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    mnist = FRePoConvNet(1, 10, (28, 28), width=128, depth=3, norm="none")
    assert mnist.embed_dim == 512 * 4 * 4  # 28x28 padded to 32x32 by the first convolution
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in mnist.features)


def test_frepo_network_init_is_truncated_lecun_normal():
    data = ImageData(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]), ("a", "b"), (0.5,) * 3, (0.25,) * 3)
    net = seeded_frepo_net(data, 0, CPU, width=128, depth=3, norm="batch")
    conv = [m for m in net.features if isinstance(m, torch.nn.Conv2d)][2].requires_grad_(False)  # fan_in 256 * 9
    std = math.sqrt(1 / (256 * 9))
    assert float(conv.weight.std()) == pytest.approx(std, rel=0.05)
    assert float(conv.weight.abs().max()) <= 2 * std / 0.87962566 + 1e-6
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))


def test_lamb_steps_by_lr_times_the_parameter_norm_along_the_adam_direction():
    x = torch.tensor([3.0, -4.0, 0.0, 12.0], requires_grad=True)
    opt = Lamb([x], lr=0.1)
    start = x.detach().clone()
    x.grad = torch.tensor([1.0, -2.0, 0.5, -0.25])
    opt.step()
    moved = x.detach() - start
    # first step: m^ = g, v^ = g^2, so r = g / (|g| + eps) ~ sign(g), scaled to lr * ||x||
    r = x.grad / (x.grad.abs() + 1e-6)
    assert torch.allclose(moved, -0.1 * start.norm() / r.norm() * r, atol=1e-6)
    assert float(moved.norm()) == pytest.approx(0.1 * float(start.norm()), rel=1e-5)
    # second step: bias-corrected moments of both gradients
    g1, g2 = x.grad.clone(), torch.tensor([-1.0, 1.0, 1.0, 1.0])
    before = x.detach().clone()
    x.grad = g2
    opt.step()
    m = (0.1 * 0.9 * g1 + 0.1 * g2) / (1 - 0.9**2)
    v = (0.001 * 0.999 * g1**2 + 0.001 * g2**2) / (1 - 0.999**2)
    r = m / (v.sqrt() + 1e-6)
    assert torch.allclose(x.detach() - before, -0.1 * before.norm() / r.norm() * r, atol=1e-6)


def test_lamb_trust_ratio_is_one_for_a_zero_parameter():
    x = torch.zeros(3, requires_grad=True)
    opt = Lamb([x], lr=0.5)
    x.grad = torch.tensor([2.0, -2.0, 0.0])
    opt.step()
    assert torch.allclose(x.detach(), torch.tensor([-0.5, 0.5, 0.0]), atol=1e-6)


def test_frepo_meta_lr_is_cosine_decayed_to_its_floor():
    frepo = FRePo(iterations=100, lr_img=3e-4, lr_floor=0.1)
    assert frepo.meta_lr(1) == pytest.approx(3e-4)
    assert frepo.meta_lr(51) == pytest.approx(3e-4 * 0.55)
    assert frepo.meta_lr(101) == pytest.approx(3e-5)
    assert frepo.meta_lr(30) > frepo.meta_lr(31)


def test_frepo_label_margin_penalty_caps_the_margin_at_one_over_k():
    labels = torch.tensor([[0.9, 0.1, 0.0], [0.4, 0.35, 0.1]])
    # margins 0.8 (capped at 1/3) and 0.05
    assert float(label_margin_penalty(labels)) == pytest.approx(-(1 / 3 + 0.05) / 2)


def test_frepo_support_adds_mirror_images_and_initial_labels_are_scaled():
    frepo = FRePo()
    syn = torch.arange(8.0).view(2, 1, 2, 2)
    labels = frepo.initial_labels(2, 1, CPU)
    assert torch.allclose(labels, torch.tensor([[0.5, -0.5], [-0.5, 0.5]]) / math.sqrt(0.2))
    x, y = frepo.support(syn, labels)
    assert torch.equal(x[2:], syn.flip(-1)) and torch.equal(x[:2], syn) and torch.equal(y, torch.cat([labels, labels]))
    x, y = FRePo(flip=False).support(syn, labels)
    assert torch.equal(x, syn) and torch.equal(y, labels)


def test_frepo_resets_a_network_after_more_than_max_online_steps(monkeypatch):
    built = []
    real_init = frepo_module._PoolMember.__init__

    def counting(self, *args, **kwargs):
        built.append(args[-1])  # its starting step count
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(frepo_module._PoolMember, "__init__", counting)
    make("frepo", iterations=7, pool_size=1, max_online_steps=2).distill(tiny(), 2, seed=0, device=CPU)
    # steps 0 -> 1 -> 2 -> 3 train, the 4th iteration finds 3 > 2 and resets; then 0 -> 1 -> 2 -> 3 again
    assert built == [0, 0]


# -- KIP's target batches and evaluation ---------------------------------------------
def test_kip_target_batches_are_class_balanced():
    data = tiny(per_class=20)
    kip = KIP(batch_target=30)
    indices = [torch.nonzero(data.y == k).flatten() for k in range(3)]
    pick = kip.target_batch(indices, torch.Generator().manual_seed(0))
    assert torch.bincount(data.y[pick], minlength=3).tolist() == [10, 10, 10] and len(set(pick.tolist())) == 30
    assert len(KIP().target_batch(indices, torch.Generator().manual_seed(0))) == 60  # 5000 // 3 > 20: all


def test_kip_krr_accuracy_is_kernel_ridge_regression_on_the_support():
    data = tiny(per_class=40)
    train, test = data.subset(torch.arange(0, 120, 2)), data.subset(torch.arange(1, 120, 2))
    kip = KIP(iterations=10)
    summary = kip.distill(train, 2, seed=0, device=CPU)
    acc = kip.krr_accuracy(summary, test, device=CPU, chunk=7)
    y_s = regression_targets(summary.data.y, 3)
    pred = krr_predict(kip.kernel_fn(test.x, summary.data.x), kip.kernel_fn(summary.data.x, summary.data.x),
                       y_s.double(), kip.reg)
    assert acc == pytest.approx(100.0 * float((pred.argmax(1) == test.y).double().mean()))
    assert acc > 90.0  # separable classes
    wrong = Summary(data=ImageData(summary.data.x, (summary.data.y + 1) % 3, data.classes, data.mean, data.std),
                    method="kip")
    assert kip.krr_accuracy(wrong, test, device=CPU) < 50.0


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
    summary = make(name, learn_labels=False).distill(tiny(), 2, seed=0, device=CPU)
    assert summary.soft_labels is None


def test_soft_labels_survives_the_stage_cache_round_trip():
    data = tiny()
    summary = Summary(data=data, method="kip", history=(1.0,), soft_labels=regression_targets(data.y, 3),
                      label_loss="mse")
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
        (DD, {"truncate": 0}, "truncate must be an integer > 0"),
        (DD, {"network": "lenet"}, "alexcifarnet, convnet"),
        (DD, {"decay_factor": 1.5}, "decay_factor must be"),
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
        (FRePo, {"optimizer": "sgd"}, "lamb, adam"),
        (FRePo, {"norm": "instance"}, "batch, none"),
        (FRePo, {"lr_floor": 2.0}, "lr_floor must be"),
    ],
)
def test_bad_settings_rejected(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_dd_summary_carries_its_schedule_and_a_proxy_replays_it_as_the_paper_evaluates():
    """``lr_from_summary`` trains a network exactly as :meth:`DD.replay` (the paper's evaluation) does."""
    import copy

    from proxynas.training import TrainSettings, fit

    data, ipc = tiny(), 2
    dd = make("dd", iterations=5)
    summary = dd.distill(data, ipc, seed=0, device=CPU)
    syn, steps, _ = dd.optimise(data, ipc, seed=0, device=CPU)
    assert summary.learned_schedule.step_sizes == tuple(steps.tolist())
    assert summary.learned_schedule.images_per_step == dd.images_per_step and summary.learned_lr is None
    assert len(steps) == dd.check_steps(ipc)

    net = dd.learner(data, 123, CPU)
    replayed = dd.replay(net, syn, ipc, steps)
    # momentum, weight decay, augmentation and the cosine schedule of these settings are all overridden
    settings = TrainSettings(epochs=7, lr=0.5, lr_from_summary=True, augment="flip", amp=False)
    fitted = fit(copy.deepcopy(net).requires_grad_(True), summary.data, settings, device=CPU, seed=0,
                 learned_schedule=summary.learned_schedule).model
    for (name, ours), theirs in zip(fitted.state_dict().items(), replayed.state_dict().values()):
        assert torch.allclose(ours, theirs, atol=1e-6), name
    assert len(fit(copy.deepcopy(net).requires_grad_(True), summary.data, settings, device=CPU, seed=0,
                   learned_schedule=summary.learned_schedule).curve) == dd.distill_epochs

    plain = fit(copy.deepcopy(net).requires_grad_(True), summary.data,
                TrainSettings(epochs=1, lr=0.5, amp=False), device=CPU, seed=0,
                learned_schedule=summary.learned_schedule).model  # lr_from_summary off: ordinary training
    assert not torch.allclose(plain.state_dict()["classifier.weight"], replayed.state_dict()["classifier.weight"])
