"""CUDA-graph training steps (proxynas.step_graphs and TrainSettings.cuda_graphs).

Everything but the capture itself runs on a CPU, where the graphed steps run
eagerly on the graphs' static buffers (warm-up and its undoing included) and
must train bit for bit as the eager steps do; the two ``needs_cuda`` tests
capture and replay real graphs and run where a CUDA device is
(``benchmarks/device_lease.py``'s ``graphs`` part runs them on a lent GPU).
"""

import contextlib
import types
from dataclasses import replace

import pytest
import torch
from torch import nn

from proxynas.data.types import ImageData
from proxynas.errors import DivergenceError
import proxynas.step_graphs as step_graphs
from proxynas.step_graphs import StepGraphs, capture_graph, sgd_step_
from proxynas.training import TrainSettings, fit, fit_fused

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="captures CUDA graphs: needs a CUDA device")


def _blobs(n=60, k=3, seed=0, size=4):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, 1, size, size, generator=g) * 0.3 + y.view(-1, 1, 1, 1).float()
    return ImageData(x, y, tuple("abc"[:k]), (0.0,), (1.0,))


@pytest.mark.parametrize(
    "momentum, weight_decay, nesterov", [(0.9, 5e-4, True), (0.9, 5e-4, False), (0.0, 0.0, False), (0.5, 0.0, True)]
)
def test_sgd_step_is_torch_sgd_with_a_tensor_learning_rate(momentum, weight_decay, nesterov):
    torch.manual_seed(0)
    ours = [torch.randn(5, 3), torch.randn(7)]
    theirs = [p.clone().requires_grad_() for p in ours]
    buffers = [torch.zeros_like(p) for p in ours]
    opt = torch.optim.SGD(theirs, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                          foreach=True)
    lr = torch.zeros(())
    for step, rate in enumerate([0.1, 0.07, 0.03, 0.01]):
        grads = [torch.randn_like(p) for p in ours]
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = rate
        opt.step()
        lr.fill_(rate)
        sgd_step_(ours, [g.clone() for g in grads], buffers, lr, momentum=momentum, weight_decay=weight_decay,
                  nesterov=nesterov)
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q.detach()), f"step {step}"


def test_warm_up_steps_before_a_capture_leave_the_state_as_it_was():
    counter, seen = torch.zeros(()), []

    def step(inputs):
        (x,) = inputs
        counter.add_(1)
        seen.append(float(x.sum()))

    graphs = StepGraphs(step, [counter], device=CPU, capture=False, warmup=2)
    graphs((torch.ones(3),))
    assert float(counter) == 1  # 2 warm-up steps undone, then the step itself
    graphs((torch.full((3,), 2.0),))
    graphs((torch.ones(4),))  # a new shape: its own static inputs and warm-up
    assert float(counter) == 3 and graphs.captured == 2
    assert seen == [3.0] * 3 + [6.0] + [4.0] * 3  # warm-ups, then each call on the inputs it was given


def _nb201(seed=0):
    from proxynas.spaces import NB201Space

    torch.manual_seed(seed)
    return NB201Space(channels=4, cells_per_stage=1).build(
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
        in_channels=1, num_classes=3, image_size=4)


def _assert_same_training(a, b, exact=True):
    """Equal curves and weights: bit for bit on a CPU (the same kernels run), within rounding on CUDA."""
    assert [(r.epoch, r.steps) for r in a.curve] == [(r.epoch, r.steps) for r in b.curve]
    if exact:
        assert a.curve == b.curve
        assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
        return
    for x, y in zip(a.curve, b.curve):
        assert y.train_loss == pytest.approx(x.train_loss, rel=1e-3)
    assert b.final.val_loss == pytest.approx(a.final.val_loss, rel=1e-3)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("settings", [
    TrainSettings(epochs=3, batch_size=16, augment="dsa"),  # 60 images: batches of 16 and a last one of 12
    TrainSettings(epochs=3, batch_size=16, momentum=0.0, weight_decay=0.0, schedule="constant"),
    TrainSettings(steps=5, batch_size=32, nesterov=False, curve_every=1),
])
def test_graphed_steps_train_exactly_as_eager_steps_do(settings):
    data = _blobs()
    eager = fit(_nb201(), data, settings, device=CPU, seed=0, eval_data=data)
    graphed = fit(_nb201(), data, replace(settings, cuda_graphs=True), device=CPU, seed=0,
                  eval_data=data)
    _assert_same_training(eager, graphed)


def test_graphed_steps_relabel_with_a_teacher_as_eager_steps_do():
    data = _blobs()
    torch.manual_seed(3)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    runs = [fit(_nb201(), data, TrainSettings(epochs=2, batch_size=16, cuda_graphs=graphs), device=CPU, seed=0,
                eval_data=data, teacher=teacher) for graphs in (False, True)]
    _assert_same_training(*runs)


def test_graphed_steps_replay_a_learned_schedule_at_its_rates():
    from proxynas.distill.base import StepSchedule

    data = _blobs(n=30)
    schedule = StepSchedule(step_sizes=(0.05, 0.02, 0.01, 0.005), images_per_step=5)  # 2 step batches
    runs = [fit(_nb201(), data, TrainSettings(lr_from_summary=True, cuda_graphs=graphs), device=CPU, seed=0,
                eval_data=data, learned_schedule=schedule) for graphs in (False, True)]
    assert runs[0].curve[-1].steps == 4
    _assert_same_training(*runs)


def test_fused_training_with_graphed_steps_matches_its_eager_steps():
    from proxynas.spaces import NB201Space
    from proxynas.spaces.nb201_fused import FusedNB201Network

    space = NB201Space(channels=4, cells_per_stage=1)
    archs = space.sample(3, seed=1)

    def fused():
        nets = []
        for arch in archs:
            torch.manual_seed(0)
            nets.append(space.build(arch, in_channels=1, num_classes=3, image_size=4))
        return FusedNB201Network(nets)

    data = _blobs()
    curves = [fit_fused(fused(), data, TrainSettings(epochs=2, batch_size=16, cuda_graphs=graphs), device=CPU,
                        seed=0, labels=archs, eval_data=data) for graphs in (False, True)]
    for eager, graphed in zip(*curves):
        assert graphed == eager


def test_the_divergence_check_stops_graphed_steps_with_the_one_line_error():
    net = _nb201()
    with torch.no_grad():
        net.classifier.weight.fill_(float("nan"))
    with pytest.raises(DivergenceError, match=r"training arch-x: loss became nan at epoch 0; lower proxy.lr"):
        fit(net, _blobs(), TrainSettings(epochs=3, cuda_graphs=True), device=CPU, seed=0, label="arch-x",
            check_every=1000)


def test_a_parameter_without_a_gradient_is_left_alone_as_torch_sgd_leaves_it():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(16, 3)
            self.spare = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return self.used(x.flatten(1))

    torch.manual_seed(0)
    net = WithSpare()
    fit(net, _blobs(), TrainSettings(epochs=2, batch_size=16, cuda_graphs=True), device=CPU, seed=0)
    assert torch.equal(net.spare.detach(), torch.ones(4))  # weight decay would have shrunk it


def test_graphed_training_leaves_no_gradients_behind():
    data = _blobs()
    settings = TrainSettings(epochs=1, batch_size=16)
    eager, graphed = _nb201(), _nb201()
    fit(eager, data, settings, device=CPU, seed=0)
    fit(graphed, data, replace(settings, cuda_graphs=True), device=CPU, seed=0)
    assert all(p.grad is not None for p in eager.parameters())  # as torch leaves them
    # on CUDA they would be the last captured graph's buffers, keeping its memory pool held
    assert all(p.grad is None for p in graphed.parameters())


class _FakeCapture:
    """torch.cuda.graph's shape: its exit ends the capture, which fails when ``end_fails``."""

    def __init__(self, events: list, end_fails: bool):
        self.events, self.end_fails = events, end_fails

    def __call__(self, graph, pool=None, stream=None):
        self.events.append(("capture", pool, stream))
        return self

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        if self.end_fails:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.events.append("ended")
        return False


class _FakeStream:
    device = torch.device("cuda", 1)


@pytest.mark.parametrize("end_fails", [False, True])
def test_a_step_failing_inside_a_capture_raises_its_own_error(monkeypatch, end_fails):
    events: list = []
    monkeypatch.setattr(torch.cuda, "graph", _FakeCapture(events, end_fails))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream before", device))
    monkeypatch.setattr(torch.cuda, "set_stream", lambda stream: events.append(("restored", stream)))
    stream = _FakeStream()

    def out_of_memory():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate"):
        capture_graph(object(), out_of_memory, pool="pool", stream=stream)
    restored = [("restored", ("stream before", stream.device))] if end_fails else ["ended"]
    assert events == [("capture", "pool", stream), *restored]

    events.clear()
    if end_fails:  # a step that ran but whose capture is invalid: the capture's error
        with pytest.raises(RuntimeError, match="stream is capturing"):
            capture_graph(object(), lambda: None, pool="pool", stream=stream)
    else:
        capture_graph(object(), lambda: None, pool="pool", stream=stream)
    assert ("restored", ("stream before", stream.device)) not in events


class _FakeCudaStream:
    def __init__(self, device=None):
        self.device = device

    def wait_stream(self, other):
        pass


def test_the_graphs_of_one_step_share_one_pool_and_a_capture_stream_on_its_device(monkeypatch):
    pools, captures = iter(["pool A", "pool B"]), []
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: next(pools))
    monkeypatch.setattr(torch.cuda, "Stream", _FakeCudaStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeCudaStream(device))
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: types.SimpleNamespace(replay=lambda: None))
    monkeypatch.setattr(step_graphs, "capture_graph",
                        lambda graph, step, *, pool, stream: captures.append((pool, stream)))
    cuda1 = torch.device("cuda", 1)
    graphs = StepGraphs(lambda inputs: None, [], device=cuda1, capture=True)
    for rows in (4, 3, 4):  # a full batch, the last one, a full one again
        graphs((torch.zeros(rows, 2),))
    assert len(captures) == 2
    (pool_a, stream_a), (pool_b, stream_b) = captures
    # a capture on the current device's stream, not cuda:1's, would record an empty graph
    assert pool_a == pool_b == "pool A" and stream_a is stream_b and stream_a.device == cuda1


def test_the_cuda_graphs_knob_is_keyed_only_when_switched_on():
    from proxynas.engine.keys import canonicalize

    assert canonicalize(TrainSettings()) == canonicalize(TrainSettings(cuda_graphs=False))
    assert canonicalize(TrainSettings()) != canonicalize(TrainSettings(cuda_graphs=True))


@needs_cuda
def test_captured_graphs_train_as_eager_cuda_steps_do(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # rounding, not atomics, is what may differ
    cuda = torch.device("cuda")
    data = _blobs(size=8)
    settings = TrainSettings(epochs=2, batch_size=16, augment="dsa", amp=False)
    eager = fit(_nb201(), data, settings, device=cuda, seed=0, eval_data=data)
    graphed = fit(_nb201(), data, replace(settings, cuda_graphs=True), device=cuda, seed=0,
                  eval_data=data)
    _assert_same_training(eager, graphed, exact=False)  # cuDNN may pick other kernels inside a graph


@needs_cuda
def test_captured_graphs_replay_one_graph_per_batch_shape_and_catch_a_nan():
    cuda = torch.device("cuda")
    captured = []
    original = StepGraphs._prepare

    def counting(self, inputs):
        captured.append(tuple(inputs[0].shape))
        return original(self, inputs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StepGraphs, "_prepare", counting)
        fit(_nb201(), _blobs(size=8), TrainSettings(epochs=3, batch_size=16, cuda_graphs=True), device=cuda, seed=0)
    assert captured == [(16, 1, 8, 8), (12, 1, 8, 8)]
    net = _nb201()
    with torch.no_grad():
        net.classifier.weight.fill_(float("nan"))
    with pytest.raises(DivergenceError, match="loss became nan at epoch 0"):
        fit(net, _blobs(size=8), TrainSettings(epochs=3, cuda_graphs=True), device=cuda, seed=0)
