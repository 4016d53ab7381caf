import math

import pytest
import torch
from torch import nn

from proxynas.data.types import ImageData
from proxynas.errors import DivergenceError
from proxynas.training import TrainSettings, accuracy, kd_loss, train_model

CPU = torch.device("cpu")


def _blobs(n=60, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, 1, 4, 4, generator=g) * 0.3 + y.view(-1, 1, 1, 1).float()
    return ImageData(x, y, tuple("abc"[:k]), (0.0,), (1.0,))


def _net():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def test_training_learns_separable_data():
    data = _blobs()
    torch.manual_seed(0)
    net = _net()
    before = accuracy(net, data, device=CPU)
    train_model(net, data, TrainSettings(epochs=30, batch_size=20, lr=0.1), device=CPU, seed=0)
    assert accuracy(net, data, device=CPU) > max(before, 90.0)


def test_training_is_deterministic_under_a_seed():
    data = _blobs()
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = train_model(_net(), data, TrainSettings(epochs=3, batch_size=16), device=CPU, seed=7)
        outs.append(net[1].weight.detach().clone())
    assert torch.equal(outs[0], outs[1])


def test_nan_loss_names_the_setting_to_change():
    data = _blobs()
    net = _net()
    with torch.no_grad():
        net[1].weight.fill_(float("nan"))
    with pytest.raises(DivergenceError, match=r"training arch-x: loss became nan at epoch 0; lower reference.lr"):
        train_model(net, data, TrainSettings(epochs=2), device=CPU, seed=0, label="arch-x", setting_prefix="reference")


def test_progress_is_reported_per_epoch():
    calls = []
    train_model(_net(), _blobs(), TrainSettings(epochs=4), device=CPU, seed=0, progress=lambda d, t, **i: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": 0.0}, {"momentum": 1.0}, {"batch_size": 0}])
def test_bad_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        TrainSettings(**bad)


@pytest.mark.parametrize("label_loss", ["ce", "mse"])
def test_soft_labels_drive_training_when_given(label_loss):
    # Soft labels that name the *next* class: a net trained on them must follow
    # them, and ignore them when the settings say so.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(3, 1, 4, 4, generator=g)[y] + 0.1 * torch.randn(60, 1, 4, 4, generator=g)
    data = ImageData(x, y, ("a", "b", "c"), (0.0,), (1.0,))  # class centres in general position
    shifted = (data.y + 1) % 3
    scale = 5.0 if label_loss == "ce" else 1.0  # logits for "ce", one-hot targets for "mse"
    soft = scale * torch.nn.functional.one_hot(shifted, 3).float()
    predictions = {}
    for use_soft in (True, False):
        torch.manual_seed(0)
        settings = TrainSettings(epochs=40, batch_size=20, lr=0.1, soft_labels=use_soft)
        net = train_model(_net(), data, settings, device=CPU, seed=0, soft_labels=soft, label_loss=label_loss)
        with torch.no_grad():
            predictions[use_soft] = net(data.x).argmax(1)
    assert (predictions[True] == shifted).float().mean() > 0.9
    assert (predictions[False] == data.y).float().mean() > 0.9


# -- budget in steps, learning curves, a summary's learned lr -------------------------------------
class _CountingSGD(torch.optim.SGD):
    """SGD that records the lr of every step it takes (class-level, reset per test)."""

    lrs: list = []

    def step(self, closure=None):
        _CountingSGD.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.fixture()
def counting_sgd(monkeypatch):
    _CountingSGD.lrs = []
    monkeypatch.setattr(torch.optim, "SGD", _CountingSGD)
    return _CountingSGD


def test_a_budget_in_steps_takes_exactly_that_many_steps_with_the_cosine_over_them(counting_sgd):
    from proxynas.training import fit

    data = _blobs()  # 60 images in batches of 16: 4 steps per epoch, and 7 is no multiple of 4
    settings = TrainSettings(epochs=50, steps=7, batch_size=16, lr=0.1)
    fitted = fit(_net(), data, settings, device=CPU, seed=0)
    assert len(counting_sgd.lrs) == 7
    assert [(r.epoch, r.steps) for r in fitted.curve] == [(1, 4), (2, 7)]  # the last epoch is partial
    assert settings.budget_epochs(len(data)) == 2
    # the cosine spans the 7 steps: full lr at step 0, strictly decreasing, nearly 0 at the last
    lrs = counting_sgd.lrs
    assert lrs[0] == pytest.approx(0.1) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.1 * (1 + math.cos(math.pi * 6 / 7)) / 2)


def test_an_epoch_budget_still_counts_epochs(counting_sgd):
    from proxynas.training import fit

    fitted = fit(_net(), _blobs(), TrainSettings(epochs=3, batch_size=16), device=CPU, seed=0)
    assert len(counting_sgd.lrs) == 12 and [r.steps for r in fitted.curve] == [4, 8, 12]


def test_the_curve_holds_each_epochs_mean_training_loss_and_the_asked_validation_points(monkeypatch):
    from proxynas import training
    from proxynas.training import evaluate, fit

    losses = []
    real = torch.nn.functional.cross_entropy

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():  # training steps; evaluation runs under no_grad
            losses.append(float(out.detach()))
        return out

    monkeypatch.setattr(training.F, "cross_entropy", recording)
    data, val = _blobs(), _blobs(n=30, seed=1)
    torch.manual_seed(0)
    net = _net()
    seen = {}

    def progress(done, total, **info):  # the network as it is at the end of each epoch
        seen[done] = evaluate(net, val, device=CPU)
        net.train()

    settings = TrainSettings(epochs=4, batch_size=16, lr=0.1, curve_every=2)
    fitted = fit(net, data, settings, device=CPU, seed=0, eval_data=val, progress=progress)
    assert len(losses) == 16
    for record in fitted.curve:
        batch = losses[(record.epoch - 1) * 4 : record.epoch * 4]
        assert record.train_loss == pytest.approx(sum(batch) / 4, rel=1e-6)
    assert [r.val_acc is None for r in fitted.curve] == [True, False, True, False]
    for record in fitted.curve[1::2]:
        assert (record.val_loss, record.val_acc) == pytest.approx(seen[record.epoch])


def test_measuring_the_curve_does_not_change_the_training():
    from proxynas.training import fit

    data, val = _blobs(), _blobs(n=30, seed=1)
    finals = []
    for every in (0, 1):
        torch.manual_seed(0)
        settings = TrainSettings(epochs=4, batch_size=16, augment="flip", curve_every=every)
        finals.append(fit(_net(), data, settings, device=CPU, seed=0, eval_data=val).final)
    assert finals[0] == finals[1] and finals[0].val_acc is not None


def test_a_learned_lr_replaces_lr_only_when_asked(counting_sgd):
    for asked, expected in ((True, 0.123), (False, 0.05)):
        counting_sgd.lrs = []
        settings = TrainSettings(epochs=1, batch_size=60, lr=0.05, lr_from_summary=asked)
        train_model(_net(), _blobs(), settings, device=CPU, seed=0, learned_lr=0.123)
        assert counting_sgd.lrs[0] == pytest.approx(expected)
    counting_sgd.lrs = []
    train_model(_net(), _blobs(), TrainSettings(epochs=1, batch_size=60, lr=0.05, lr_from_summary=True),
                device=CPU, seed=0, learned_lr=None)  # no learned lr in the summary: lr it is
    assert counting_sgd.lrs[0] == pytest.approx(0.05)


def test_a_diverging_learned_lr_names_the_setting_that_turns_it_off():
    net = _net()
    with torch.no_grad():
        net[1].weight.fill_(float("nan"))
    settings = TrainSettings(epochs=1, lr_from_summary=True)
    with pytest.raises(DivergenceError, match=r"learned lr 0.5 diverges; set proxy.lr_from_summary: false"):
        train_model(net, _blobs(), settings, device=CPU, seed=0, learned_lr=0.5)


# -- teacher relabelling (label distillation) -----------------------------------------------------
def test_the_kd_loss_is_hintons_formula_on_a_hand_example():
    student = torch.tensor([[2.0, 0.0, -2.0]])
    teacher = torch.tensor([[0.0, 4.0, 0.0]])
    t = 2.0
    p = [math.exp(v / t) for v in (0.0, 4.0, 0.0)]
    p = [v / sum(p) for v in p]
    q = [math.exp(v / t) for v in (2.0, 0.0, -2.0)]
    q = [v / sum(q) for v in q]
    expected = t * t * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert kd_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    # batchmean: a batch of two copies has the same loss; identical logits have none
    assert kd_loss(student.repeat(2, 1), teacher.repeat(2, 1), t).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-7)


class _ShiftedTeacher(nn.Module):
    """A fixed "teacher" whose logits name the next class of the blob a point belongs to."""

    def forward(self, x):
        centre = x.mean(dim=(1, 2, 3)).round().clamp(0, 2).long()
        return 10.0 * nn.functional.one_hot((centre + 1) % 3, 3).float()


def test_a_teacher_relabels_every_batch_and_its_labels_replace_the_images_own():
    data = _blobs(n=60)
    calls = []
    teacher = _ShiftedTeacher()
    teacher.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    torch.manual_seed(0)
    settings = TrainSettings(epochs=30, batch_size=20, lr=0.1)
    net = train_model(_net(), data, settings, device=CPU, seed=0, teacher=teacher, temperature=1.0)
    assert calls == [20] * 90  # one relabelling per mini-batch (3 per epoch), of the batch itself
    with torch.no_grad():
        predicted = net(data.x).argmax(1)
    assert (predicted == (data.y + 1) % 3).float().mean() > 0.9
    assert not teacher.training  # relabelling runs the teacher in eval mode


class _GoesNaN(nn.Module):
    """A classifier whose output turns NaN from its ``after``-th training forward on."""

    def __init__(self, after: int):
        super().__init__()
        self.body, self.calls, self.after = _net(), 0, after

    def forward(self, x):
        self.calls += self.training
        out = self.body(x)
        return out * float("nan") if self.calls > self.after else out


@pytest.mark.parametrize("check_every", [1, 4, 1000])
def test_the_device_side_divergence_check_names_the_first_bad_epoch_however_rarely_it_is_read(check_every):
    # 60 images, batch 20: 3 steps an epoch; the 8th forward is in epoch 2 (0-based)
    with pytest.raises(DivergenceError, match=r"^training arch-y: loss became nan at epoch 2; lower proxy.lr \(now 0.1\)$"):
        train_model(_GoesNaN(after=7), _blobs(), TrainSettings(epochs=30, batch_size=20), device=CPU, seed=0,
                    label="arch-y", check_every=check_every)


def test_flip_augmentation_draws_from_the_step_seed_not_the_global_generator():
    def trained(global_seed):
        torch.manual_seed(0)
        net = _net()
        torch.manual_seed(global_seed)  # what else drew random numbers before training
        return train_model(net, _blobs(), TrainSettings(epochs=2, batch_size=8, augment="flip"), device=CPU, seed=0)

    first, second = trained(1), trained(2)
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)


def test_the_channels_last_knob_is_keyed_only_when_switched_off():
    from proxynas.engine.keys import value_key
    from proxynas.proxies import TrainProxy

    assert value_key(TrainProxy()) == value_key(TrainProxy(channels_last=True))  # old caches stay valid
    assert value_key(TrainProxy(channels_last=False)) != value_key(TrainProxy())
    with pytest.raises((TypeError, ValueError)):
        TrainSettings(channels_last="yes")


def test_compile_runs_the_fused_training_forward_through_torch_compile(monkeypatch):
    # compiling for real takes minutes on a CPU: a stand-in records what is compiled and runs it as is
    from proxynas.evaluation import score_all
    from proxynas.proxies import ProxyContext, TrainProxy
    from proxynas.spaces import NB201Space
    from proxynas.testing.proxies import separable_data

    compiled = []

    def fake_compile(module, **options):
        compiled.append((type(module).__name__, options))
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    splits = separable_data()
    space = NB201Space(channels=4, cells_per_stage=1)
    archs = space.sample(2, seed=0)
    ctx = ProxyContext(space=space, dataset=splits, train_data=splits.train, device=torch.device("cpu"), seed=0)

    def scores(**settings):
        return [r["value"] for r in score_all(TrainProxy(epochs=2, batch_size=8, arch_batch=2, **settings), archs, ctx)]

    plain = scores()
    assert compiled == []
    assert scores(compile=True) == plain
    assert compiled == [("FusedNB201Network", {"dynamic": False})]


def _nb201(seed=0):
    from proxynas.spaces import NB201Space

    torch.manual_seed(seed)
    return NB201Space(channels=4, cells_per_stage=1).build(
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
        in_channels=1, num_classes=3, image_size=4)


def _is_channels_last(net):
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.dim() == 4)


def test_channels_last_training_is_nchw_training_up_to_float_rounding():
    from proxynas.training import fit

    data, settings = _blobs(), TrainSettings(epochs=3, batch_size=16, augment="dsa")
    nchw = fit(_nb201(), data, settings, device=CPU, seed=0, eval_data=data)
    nhwc = fit(_nb201(), data, settings, device=CPU, seed=0, eval_data=data, channels_last=True)
    assert _is_channels_last(nhwc.model) and not _is_channels_last(nchw.model)
    for a, b in zip(nchw.curve, nhwc.curve):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4)
    assert nhwc.final.val_loss == pytest.approx(nchw.final.val_loss, rel=1e-4)
    for p, q in zip(nchw.model.parameters(), nhwc.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=5e-4)  # 3 epochs amplify the rounding


def test_channels_last_is_off_when_the_setting_is():
    from proxynas.training import fit

    switched_off = fit(_nb201(), _blobs(), TrainSettings(epochs=1, channels_last=False), device=CPU, seed=0,
                       channels_last=True)
    assert not _is_channels_last(switched_off.model)


@pytest.mark.parametrize("space_name, expected", [("nb201", True), ("convnet720", False)])
def test_the_training_proxy_trains_channels_last_for_the_spaces_that_declare_it(monkeypatch, space_name, expected):
    import proxynas.proxies.training as proxy_training
    from proxynas.proxies import ProxyContext, TrainProxy
    from proxynas.spaces import SEARCH_SPACES
    from proxynas.testing.proxies import separable_data

    asked = []
    real_fit = proxy_training.fit

    def spy(*args, channels_last=False, **kwargs):
        asked.append(channels_last)
        return real_fit(*args, channels_last=channels_last, **kwargs)

    monkeypatch.setattr(proxy_training, "fit", spy)
    space = SEARCH_SPACES.get(space_name)()
    assert space.trains_channels_last is expected
    splits = separable_data()
    ctx = ProxyContext(space=space, dataset=splits, train_data=splits.train, device=CPU, seed=0)
    TrainProxy(epochs=1, batch_size=32).score(space.sample(1, seed=0)[0], ctx)
    assert asked == [expected]
