"""Trajectory matching: MTT (Cazenavette et al. 2022, eq. 1) and TESLA (Cui et al. 2023, Sec. 3).

Checks the expert trajectories (the cached preparation stage), eq. 1, TESLA's
Eq. 6 gradient (an independent autograd reference; MTT's gradient for one
step only) and its exact variant (MTT's gradient) in graph memory that does
not grow with the unrolled steps, TESLA's per-iteration soft labels, the
learned step size reaching proxy training, the papers' presets, the
prepare/distill split and error reporting.
"""

import copy
import dataclasses
import io
import weakref

import pytest
import torch

from proxynas.data.types import ImageData
from proxynas.distill import DISTILLERS, MTT, TESLA
from proxynas.augment import DSA
from proxynas.distill.base import initial_images
from proxynas.distill.trajectory import FlatStudent, Matched, Unroll, trajectory_distance
from proxynas.errors import ConfigError, DivergenceError

CPU = torch.device("cpu")
IPC = 2
# Tiny experts: 3 checkpoints each, 3 SGD steps per epoch on 60 images. The step sizes are
# pinned (the defaults are CIFAR-10's, lr_img a ZCA-space value) so these tests do not
# move with the papers' rows.
EXPERTS = {"num_experts": 2, "expert_train_epochs": 3, "expert_batch": 20, "expert_lr": 0.05, "width": 32, "depth": 2}
FAST = {**EXPERTS, "iterations": 20, "syn_steps": 6, "expert_epochs": 1, "max_start_epoch": 2,
        "lr_img": 1000.0, "lr_teacher": 0.01}
METHODS = {"mtt": MTT, "tesla": TESLA}


def tiny(per_class=20, seed=0, noise_seed=None) -> ImageData:
    """3 separable 1x8x8 classes: a fixed random pattern per class (``seed``) plus pixel noise (``noise_seed``)."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(3, 1, 8, 8, generator=g)
    if noise_seed is not None:
        g = torch.Generator().manual_seed(noise_seed)
    y = torch.arange(3).repeat_interleave(per_class)
    x = centres[y] + 0.5 * torch.randn(len(y), 1, 8, 8, generator=g)
    return ImageData(x, y, ("a", "b", "c"), (0.5,), (0.25,))


@pytest.fixture(scope="module")
def data() -> ImageData:
    return tiny()


@pytest.fixture(scope="module")
def experts(data):
    return MTT(**FAST).prepare(data, seed=0, device=CPU)


def accuracy(student: FlatStudent, theta: torch.Tensor, data: ImageData) -> float:
    with torch.no_grad():
        return float((student.logits(theta, data.x).argmax(1) == data.y).float().mean())


def make_unroll(data, experts, steps=6, batch=4, dsa="color_crop_cutout_flip_scale_rotate", seed=0,
                soft_labels=None) -> Unroll:
    student = MTT(**FAST).student(data, CPU)
    g = torch.Generator().manual_seed(seed)
    n = 3 * IPC
    plan = [(torch.randperm(n, generator=g)[:batch], s) for s in range(steps)]
    return Unroll(
        student=student,
        start=experts[0][1],
        target=experts[0][2],
        steps=plan,
        augment=DSA(strategy=dsa, per_sample=True),
        hard_labels=torch.arange(3).repeat_interleave(IPC),
        soft_labels=soft_labels,
    )


def learned_tensors(data, seed=0):
    """Images and alpha (requiring grad) and a set of logit labels (constants, as TESLA's are)."""
    g = torch.Generator().manual_seed(seed)
    syn = data.x[torch.randperm(len(data), generator=g)[: 3 * IPC]].clone().requires_grad_(True)
    labels = torch.randn(3 * IPC, 3, generator=g)
    lr = torch.tensor(0.05, requires_grad=True)
    return syn, lr, labels


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- experts ------------------------------------------------------------------------
def test_prepare_returns_one_checkpoint_per_epoch(data, experts):
    student = MTT(**FAST).student(data, CPU)
    assert len(experts) == EXPERTS["num_experts"]
    for trajectory in experts:
        assert trajectory.shape == (EXPERTS["expert_train_epochs"] + 1, student.numel)
        assert trajectory.dtype == torch.float32 and trajectory.device.type == "cpu"
        steps = (trajectory[1:] - trajectory[:-1]).norm(dim=1)
        assert (steps > 1e-3).all(), "every epoch must move the parameters"
    assert not torch.equal(experts[0][0], experts[1][0]), "experts start from different initialisations"


def test_prepare_is_deterministic_under_seed(data, experts):
    again = MTT(**FAST).prepare(data, seed=0, device=CPU)
    other = MTT(**FAST).prepare(data, seed=1, device=CPU)
    assert all(torch.equal(a, b) for a, b in zip(experts, again))
    assert not torch.equal(experts[0], other[0])


def test_expert_learns_separable_data():
    train, held_out = tiny(per_class=30, noise_seed=1), tiny(per_class=30, noise_seed=2)
    method = MTT.for_prepare({**EXPERTS, "num_experts": 1, "expert_train_epochs": 5})
    trajectory = method.prepare(train, seed=0, device=CPU)[0]
    student = method.student(train, CPU)
    assert accuracy(student, trajectory[0], held_out) < 0.6
    assert accuracy(student, trajectory[-1], held_out) >= 0.95


def test_prepare_reports_progress(data):
    calls = []
    MTT(**FAST).prepare(data, seed=0, device=CPU, progress=lambda done, total, **info: calls.append((done, total)))
    total = EXPERTS["num_experts"] * EXPERTS["expert_train_epochs"]
    assert calls == [(i, total) for i in range(1, total + 1)]


# -- eq. 1 ----------------------------------------------------------------------------
def test_distance_is_one_at_the_start_and_zero_at_the_target():
    start, target = torch.randn(10), torch.randn(10)
    assert float(trajectory_distance(start, start, target)) == pytest.approx(1.0)
    assert float(trajectory_distance(target, start, target)) == 0.0
    mid = 0.5 * (start + target)
    assert float(trajectory_distance(mid, start, target)) == pytest.approx(0.25)


def test_real_data_tracks_the_expert_better_than_noise(data):
    """With the expert's own data, batch size and step size the student lands near theta*_{t+1}."""
    method = MTT(**{**FAST, "expert_dsa": "none"})
    experts = method.prepare(data, seed=0, device=CPU)
    g = torch.Generator().manual_seed(0)
    steps_per_epoch = len(data) // EXPERTS["expert_batch"]
    plan = [(torch.randperm(len(data), generator=g)[: EXPERTS["expert_batch"]], 0) for _ in range(steps_per_epoch)]

    def loss(syn):
        unroll = Unroll(method.student(data, CPU), experts[0][1], experts[0][2], plan, DSA(strategy="none"), data.y)
        lr = torch.tensor(EXPERTS["expert_lr"], requires_grad=True)
        return method.matching_gradients(unroll, syn.clone().requires_grad_(True), lr).loss

    real = loss(data.x)
    noise = loss(torch.randn(data.x.shape, generator=g))
    assert real < 0.3 < noise


@pytest.mark.parametrize("name", ["mtt", "tesla"])
def test_distillation_lowers_eq1_and_learns_a_positive_step_size(name, data, experts):
    lrs = []
    summary = METHODS[name](**{**FAST, "iterations": 30, "lr_lr": 1e-4}).distill_prepared(
        data, IPC, experts, seed=0, device=CPU, progress=lambda done, total, **info: lrs.append(info["syn_lr"])
    )
    h = summary.history
    assert sum(h[-5:]) / 5 < 0.9 * sum(h[:5]) / 5
    assert all(lr > 0 for lr in lrs)
    assert lrs[-1] != pytest.approx(0.01, rel=1e-2), "alpha (lr_teacher 0.01 at the start) should be learned"


def test_step_size_stays_positive_under_a_huge_lr_lr(data, experts):
    """lr_lr 0.1 overshoots alpha, then pushes it below zero; it is floored at 1e-3 x lr_teacher instead."""
    lrs = []
    MTT(**{**FAST, "iterations": 6, "log_every": 1, "lr_lr": 0.1}).distill_prepared(
        data, IPC, experts, seed=0, device=CPU, progress=lambda done, total, **info: lrs.append(info["syn_lr"])
    )
    assert min(lrs) == pytest.approx(1e-5)


def test_student_divergence_names_both_learning_rates(data, experts):
    with pytest.raises(DivergenceError, match=r"lower distill\.methods\.mtt\.lr_img or distill\.methods\.mtt\.lr_lr"):
        MTT(**{**FAST, "lr_teacher": 1e6}).distill_prepared(data, IPC, experts, seed=0, device=CPU)


# -- TESLA's constant-memory gradient ----------------------------------------------------
def eq6_reference(unroll: Unroll, syn: torch.Tensor, lr: torch.Tensor) -> Matched:
    """TESLA Eq. 6 by plain autograd: eq. 1 of theta*_t - alpha sum_n g_n with every theta_hat_{t+n} a constant.

    Each g_n still depends on its own batch (and alpha scales the sum), but
    not on the earlier batches through theta_hat_{t+n}: the terms TESLA drops.
    """
    thetas = [unroll.start]
    for n in range(len(unroll.steps)):
        theta = thetas[-1].detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(unroll.step_loss(theta, syn.detach(), n), theta)
        thetas.append((theta - lr.detach() * grad).detach())
    total = 0
    for n, theta in enumerate(thetas[:-1]):
        theta = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(unroll.step_loss(theta, syn, n), theta, create_graph=True)
        total = total + grad
    distance = unroll.distance(unroll.start - lr * total)
    grad_syn, grad_lr = torch.autograd.grad(distance, [syn, lr])
    return Matched(loss=distance.item(), syn=grad_syn, lr=grad_lr)


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_tesla_default_gradient_is_eq6(data, experts, labels):
    syn, lr, soft = learned_tensors(data)
    unroll = make_unroll(data, experts, soft_labels=soft if labels == "soft" else None)
    tesla = TESLA(**FAST).matching_gradients(unroll, syn, lr)
    reference = eq6_reference(unroll, syn, lr)
    assert tesla.loss == pytest.approx(reference.loss, rel=1e-6)
    assert relative(tesla.syn, reference.syn) < 1e-5
    assert relative(tesla.lr, reference.lr) < 1e-5
    assert syn.grad is None and lr.grad is None  # gradients are returned, never accumulated


def test_eq6_is_mtts_gradient_for_one_step_only(data, experts):
    """Eq. 6 drops the earlier batches' effect on theta_hat_{t+n}: none for N = 1, some beyond."""
    syn, lr, _ = learned_tensors(data)
    one, many = make_unroll(data, experts, steps=1), make_unroll(data, experts, steps=6)
    eq6, mtt = TESLA(**FAST), MTT(**FAST)
    assert relative(eq6.matching_gradients(one, syn, lr).syn, mtt.matching_gradients(one, syn, lr).syn) < 1e-5
    assert relative(eq6.matching_gradients(many, syn, lr).syn, mtt.matching_gradients(many, syn, lr).syn) > 1e-3


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_exact_tesla_gradient_equals_mtt_backpropagation(data, experts, labels):
    syn, lr, soft = learned_tensors(data)
    unroll = make_unroll(data, experts, soft_labels=soft if labels == "soft" else None)
    mtt = MTT(**FAST).matching_gradients(unroll, syn, lr)
    exact = TESLA(**FAST, exact=True).matching_gradients(unroll, syn, lr)
    assert exact.loss == pytest.approx(mtt.loss, rel=1e-6)
    assert relative(exact.syn, mtt.syn) < 1e-5
    assert relative(exact.lr, mtt.lr) < 1e-5
    assert syn.grad is None and lr.grad is None


class SavedTensorBytes:
    """Peak bytes of tensors held alive by autograd graphs (saved for backward) inside the block.

    Every saved tensor is wrapped in a box whose finaliser runs when the graph
    that saved it is freed, so the running total is what the graphs hold at
    that moment: deterministic, unlike timing or the process's RSS.
    """

    class _Box:
        def __init__(self, tensor):
            self.tensor = tensor

    def __init__(self):
        self.live = self.peak = 0

    def _pack(self, tensor):
        box = self._Box(tensor)
        size = tensor.numel() * tensor.element_size()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(box, self._release, size)
        return box

    def _release(self, size):
        self.live -= size

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda box: box.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


@pytest.mark.parametrize("exact", [False, True])
def test_tesla_graph_memory_does_not_grow_with_unrolled_steps(data, experts, exact):
    syn, lr, labels = learned_tensors(data)
    peaks = {}
    for name, method in (("mtt", MTT(**FAST)), ("tesla", TESLA(**FAST, exact=exact))):
        for steps in (2, 8):
            unroll = make_unroll(data, experts, steps=steps, soft_labels=labels)
            with SavedTensorBytes() as saved:
                method.matching_gradients(unroll, syn, lr)
            peaks[name, steps] = saved.peak
    assert peaks["mtt", 8] > 3 * peaks["mtt", 2]
    assert peaks["tesla", 8] <= 1.05 * peaks["tesla", 2]
    assert peaks["tesla", 8] < peaks["mtt", 8] / 3


# -- soft labels ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RecordingTESLA(TESLA):
    """TESLA that records, every iteration, its target checkpoint, the images and the labels the student got."""

    def matching_gradients(self, unroll, syn, lr):
        RECORDED.append((unroll.target.clone(), syn.detach().clone(), unroll.soft_labels))
        return super().matching_gradients(unroll, syn, lr)


RECORDED: list = []


def test_tesla_labels_come_from_each_iterations_target_checkpoint(data, experts):
    """Sec. 3.3 as released: every iteration relabels the current images with theta*_{t+M}."""
    RECORDED.clear()
    method = RecordingTESLA(**{**FAST, "iterations": 6, "soft_labels": True})
    summary = method.distill_prepared(data, IPC, experts, seed=0, device=CPU)
    student = method.student(data, CPU)
    assert len(RECORDED) == 6
    for target, syn, labels in RECORDED:
        assert torch.allclose(labels, student.logits(target, syn), atol=1e-6)
    # two experts and two start epochs: the targets, hence the labels, change between iterations
    assert len({tuple(target[:4].tolist()) for target, _, _ in RECORDED}) > 1
    assert any(not torch.allclose(RECORDED[0][2], labels) for _, _, labels in RECORDED[1:])
    # the summary carries the last iteration's labels, as the released code evaluates with them
    assert torch.equal(summary.soft_labels, RECORDED[-1][2])
    assert summary.label_loss == "ce" and summary.soft_labels.dtype == torch.float32


def test_tesla_first_labels_are_the_target_checkpoints_logits_on_the_initial_images(data, experts):
    """One expert, start epoch 0: the target is its epoch-M checkpoint, not its last one."""
    method = TESLA(**{**FAST, "iterations": 1, "max_start_epoch": 1, "soft_labels": True})
    summary = method.distill_prepared(data, IPC, experts[:1], seed=0, device=CPU)
    initial = initial_images(data, IPC, "real", torch.Generator().manual_seed(0), CPU)
    student = method.student(data, CPU)
    target = experts[0][FAST["expert_epochs"]]
    assert torch.allclose(summary.soft_labels, student.logits(target, initial), atol=1e-6)
    assert not torch.allclose(summary.soft_labels, student.logits(experts[0][-1], initial), atol=1e-3)


def test_soft_labels_train_a_network_with_train_model(data, experts):
    from proxynas.models import ConvNet
    from proxynas.training import TrainSettings, train_model

    summary = TESLA(**FAST, soft_labels=True).distill_prepared(data, IPC, experts, seed=0, device=CPU)
    target = summary.soft_labels.softmax(dim=1)

    def soft_cross_entropy(net) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(net.eval()(summary.data.x), target))

    torch.manual_seed(0)
    net = ConvNet(1, 3, 8, width=16, depth=2)
    hard = copy.deepcopy(net)
    before = soft_cross_entropy(net)
    for model, use_soft in ((net, True), (hard, False)):
        settings = TrainSettings(epochs=5, amp=False, soft_labels=use_soft)
        train_model(model, summary.data, settings, device=CPU, seed=0,
                    soft_labels=summary.soft_labels, label_loss=summary.label_loss)
    # training fits the soft labels, and they (not the hard classes) are what it trained on
    assert soft_cross_entropy(net) < before
    assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), hard.parameters()))


def test_hard_labels_unless_tesla_is_asked_for_soft_ones(data, experts):
    assert MTT(**FAST).distill_prepared(data, IPC, experts, seed=0, device=CPU).soft_labels is None
    assert TESLA(**FAST).distill_prepared(data, IPC, experts, seed=0, device=CPU).soft_labels is None
    soft = TESLA(**FAST, soft_labels=True).distill_prepared(data, IPC, experts, seed=0, device=CPU)
    assert soft.soft_labels.shape == (3 * IPC, 3)


# -- the learned step size alpha -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["mtt", "tesla"])
def test_the_learned_step_size_trains_the_proxy_when_asked(name):
    """alpha reaches proxy training through the pipeline's evaluate stage (TrainProxy.lr_from_summary)."""
    from proxynas.pipeline import evaluate
    from proxynas.proxies import TrainProxy
    from proxynas.testing.proxies import ARCH, SPACE, separable_data

    splits = separable_data(classes=3, per_class=12)
    summary = METHODS[name](**{**FAST, "iterations": 10}).distill(splits.train, IPC, seed=0, device=CPU)
    alpha = summary.learned_lr
    assert alpha is not None and alpha > 0 and alpha != FAST["lr_teacher"]

    def values(proxy):
        params = {"space": SPACE, "seed": 0, "setting_prefix": "proxy", "proxy": proxy}
        return [row["values"] for row in evaluate([ARCH], splits, params, CPU, summary=summary)]

    asked = TrainProxy(epochs=2, batch_size=8, lr=0.05, lr_from_summary=True, scores=("val_acc", "sotl_2"))
    assert values(asked) == values(dataclasses.replace(asked, lr=alpha, lr_from_summary=False))
    assert values(asked) != values(dataclasses.replace(asked, lr_from_summary=False))


# -- the papers' settings -----------------------------------------------------------------------
def test_defaults_are_mtts_cifar10_ipc10_row_with_the_papers_experts():
    assert MTT() == MTT.paper("cifar10", 10)
    default = MTT()
    assert (default.num_experts, default.expert_train_epochs, default.iterations) == (100, 50, 5000)
    assert (default.lr_img, default.lr_lr, default.lr_teacher) == (100.0, 1e-5, 0.001)
    tesla = TESLA()
    assert not tesla.soft_labels and not tesla.exact and tesla.iterations == 10000


@pytest.mark.parametrize("name", ["mtt", "tesla"])
def test_the_paper_protocol_trains_at_the_learned_step_size_for_1000_epochs(name):
    protocol = METHODS[name].paper_protocol
    assert protocol.learned_lr and protocol.epochs == 1000 and protocol.augment == "dsa" and protocol.zca
    assert protocol.labels == ("hard" if name == "mtt" else "learned")


def test_ipc50_is_the_unwhitened_row():
    # MTT's table: ZCA for IPC 1 and 10 (lr_img 100), none for IPC 50 (lr_img 1000)
    assert MTT.paper("cifar10", 50).lr_img == 1000.0 and MTT.paper("cifar10", 1).lr_img == 100.0
    assert TESLA.paper("cifar10", 1).max_start_epoch == 5  # TESLA's README command, not MTT's row


# -- the prepare / distill split -------------------------------------------------------------
@pytest.mark.parametrize("name", ["mtt", "tesla"])
def test_prepare_params_are_the_expert_settings_only(name):
    cls = METHODS[name]
    base = cls(**FAST)
    assert set(base.prepare_params()) == set(cls.prepare_fields)
    assert cls(**{**FAST, "syn_steps": 3, "lr_img": 5.0, "iterations": 2}).prepare_params() == base.prepare_params()
    assert cls(**{**FAST, "expert_lr": 0.1}).prepare_params() != base.prepare_params()
    # The pipeline rebuilds the method from the preparation settings alone.
    assert DISTILLERS.get(name).for_prepare(base.prepare_params()).prepare_params() == base.prepare_params()


def test_prepared_experts_survive_the_stage_cache(experts):
    """The pipeline caches prepare()'s output with torch.save; it must load back without pickled code."""
    buffer = io.BytesIO()
    torch.save({"prepared_mtt": experts}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["prepared_mtt"]
    assert all(torch.equal(a, b) for a, b in zip(loaded, experts))


def test_mtt_and_tesla_share_experts():
    assert MTT(**FAST).prepare_params() == TESLA(**FAST).prepare_params()


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("syn_steps", 0),
        ("expert_epochs", -1),
        ("max_start_epoch", 1.5),
        ("iterations", True),
        ("num_experts", 0),
        ("expert_train_epochs", 0),
        ("expert_batch", 0),
        ("batch_syn", 0),
        ("lr_img", 0.0),
        ("lr_lr", -1.0),
        ("lr_teacher", 0.0),
        ("expert_lr", -0.1),
        ("momentum_img", 1.0),
        ("expert_momentum", -0.5),
        ("expert_weight_decay", -1.0),
        ("init", "zeros"),
        ("norm", "batchnorm"),
        ("dsa", "blur"),
        ("expert_dsa", "blur"),
    ],
)
@pytest.mark.parametrize("name", ["mtt", "tesla"])
def test_bad_settings_name_the_field(name, field, value):
    with pytest.raises(ValueError, match=field if field not in ("dsa", "expert_dsa") else "DSA transform"):
        METHODS[name](**{field: value})


@pytest.mark.parametrize("field", ["soft_labels", "exact"])
def test_teslas_switches_must_be_booleans(field):
    with pytest.raises(ValueError, match=field):
        TESLA(**{field: 1})


def test_mtt_has_no_label_assignment():
    # soft labels are TESLA's (Sec. 3.3); MTT trains on the classes
    with pytest.raises(TypeError, match="soft_labels"):
        MTT(soft_labels=True)


@pytest.mark.parametrize("name", ["mtt", "tesla"])
def test_nan_lr_img_raises_divergence_naming_the_setting(name, data, experts):
    with pytest.raises(
        DivergenceError, match=rf"{name}: objective became nan at iteration 2; lower distill\.methods\.{name}\.lr_img"
    ):
        METHODS[name](**{**FAST, "lr_img": float("nan")}).distill_prepared(data, IPC, experts, seed=0, device=CPU)


def test_diverging_expert_names_expert_lr(data):
    with pytest.raises(DivergenceError, match=r"lower distill\.methods\.mtt\.expert_lr"):
        MTT(**{**FAST, "expert_lr": float("inf")}).prepare(data, seed=0, device=CPU)


def test_start_epochs_beyond_the_expert_training_fail_at_construction():
    # FAST's experts train 3 epochs; a start epoch up to 2 plus 2 expert epochs needs 4
    with pytest.raises(ValueError, match=r"max_start_epoch - 1 \+ expert_epochs = 4 .* expert_train_epochs is 3"):
        MTT(**{**FAST, "max_start_epoch": 3, "expert_epochs": 2})


def test_prepare_stage_instance_ignores_distill_only_settings():
    # the preparation stage only knows the expert settings; the default start epoch (20)
    # must not be checked against expert_train_epochs=3 there
    method = MTT(**FAST)
    assert MTT.for_prepare(method.prepare_params()).prepare_params() == method.prepare_params()
    with pytest.raises(ValueError):
        MTT(**method.prepare_params())


def test_start_epochs_beyond_the_given_experts_raise_config_error(data, experts):
    # settings that are fine by themselves, given experts trained for fewer epochs than they say
    longer = {**FAST, "expert_train_epochs": 5, "max_start_epoch": 3, "expert_epochs": 2}
    with pytest.raises(ConfigError, match=r"max_start_epoch - 1 \+ expert_epochs = 4 .* they have 3"):
        MTT(**longer).distill_prepared(data, IPC, experts, seed=0, device=CPU)


def test_experts_of_another_architecture_are_rejected(data, experts):
    with pytest.raises(ConfigError, match="width/depth/norm must match"):
        MTT(**{**FAST, "width": 16}).distill_prepared(data, IPC, experts, seed=0, device=CPU)
