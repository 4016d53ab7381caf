"""One contract for every registered distiller; a new method passes it or is not done.

Settings below only shrink iterative methods so the suite stays fast on a CPU
(a distiller missing from FAST runs with its defaults).
"""

import pytest
import torch

import proxynas.distill  # noqa: F401  (registers the built-in methods)
from proxynas.data.types import ImageData
from proxynas.distill import DISTILLERS, Distiller, Summary
from proxynas.errors import ConfigError, DataError

CPU = torch.device("cpu")
IPC = 2
# depth 2 keeps a 2x2 map on 8x8 images, so DM's objective moves within a few iterations.
FAST: dict[str, dict] = {
    "dm": {"iterations": 30, "width": 32, "depth": 2},
    "dc": {"iterations": 20, "match_steps": 2, "net_epochs": 1, "batch_real": 20, "width": 32, "depth": 2},
    "dcc": {"iterations": 20, "match_steps": 2, "net_epochs": 1, "batch_real": 20, "width": 32, "depth": 2},
    "idc": {"iterations": 20, "match_steps": 2, "net_steps": 1, "batch_net": 20, "batch_real": 20, "width": 32,
            "depth": 2},
    "dd": {"iterations": 30, "width": 32, "depth": 2, "inner_steps": 5, "truncate": 5},
    "kip": {"iterations": 30},
    "frepo": {"iterations": 30, "width": 32, "depth": 2, "pool_size": 3, "max_online_steps": 10},
    "mtt": {"iterations": 30, "syn_steps": 6, "expert_epochs": 1, "max_start_epoch": 2, "num_experts": 2,
            "expert_train_epochs": 3, "expert_batch": 20, "expert_lr": 0.05, "width": 32, "depth": 2},
    "tesla": {"iterations": 30, "syn_steps": 6, "expert_epochs": 1, "max_start_epoch": 2, "num_experts": 2,
              "expert_train_epochs": 3, "expert_batch": 20, "expert_lr": 0.05, "width": 32, "depth": 2},
}
NAMES = DISTILLERS.names()


def tiny(classes=("ant", "bee", "cat"), per_class=(20, 20, 20), seed=0) -> ImageData:
    """Separable 1x8x8 classes: a fixed random pattern per class plus small pixel noise."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(len(classes), 1, 8, 8, generator=g)
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(per_class)]).long()
    x = centres[y] + 0.5 * torch.randn(len(y), 1, 8, 8, generator=g)
    perm = torch.randperm(len(y), generator=g)  # classes interleaved, as in a real split
    return ImageData(x[perm], y[perm], tuple(classes), (0.5,), (0.25,))


def make(name: str) -> Distiller:
    return DISTILLERS.get(name)(**FAST.get(name, {}))


@pytest.fixture(scope="module")
def data() -> ImageData:
    return tiny()


@pytest.fixture(scope="module")
def runs(data):
    """Each distiller run twice with seed 0 and once with seed 1 (cached for the module)."""
    cache = {}

    def get(name: str) -> tuple[Summary, Summary, Summary]:
        if name not in cache:
            d = make(name)
            cache[name] = tuple(d.distill(data, IPC, seed=s, device=CPU) for s in (0, 0, 1))
        return cache[name]

    return get


def test_registry_is_populated():
    assert {"random", "herding", "kcenter", "dm"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_identity(name):
    cls = DISTILLERS.get(name)
    assert cls.name == name
    assert isinstance(cls.iterative, bool)
    assert isinstance(cls(), Distiller)  # every setting has a default


@pytest.mark.parametrize("name", NAMES)
def test_shape_labels_and_metadata(name, data, runs):
    summary = runs(name)[0]
    assert summary.method == name
    out = summary.data
    c, h, w = data.shape
    assert out.x.shape == (data.num_classes * IPC, c, h, w)
    assert out.x.dtype == torch.float32 and out.y.dtype == torch.int64
    assert torch.equal(out.y, torch.arange(data.num_classes).repeat_interleave(IPC))
    assert (out.classes, out.mean, out.std) == (data.classes, data.mean, data.std)


@pytest.mark.parametrize("name", NAMES)
def test_on_cpu_and_finite(name, runs):
    out = runs(name)[0].data
    assert out.x.device.type == "cpu" and out.y.device.type == "cpu"
    assert torch.isfinite(out.x).all()
    assert not out.x.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name, runs):
    a, b, other = runs(name)
    assert torch.equal(a.data.x, b.data.x)
    assert a.history == b.history
    if make(name).seeded:
        assert not torch.equal(a.data.x, other.data.x)


@pytest.mark.parametrize("name", NAMES)
def test_input_not_modified(name):
    data = tiny()
    before = data.x.clone()
    make(name).distill(data, IPC, seed=0, device=CPU)
    assert torch.equal(data.x, before)


@pytest.mark.parametrize("name", NAMES)
def test_too_small_class_names_it(name):
    data = tiny(per_class=(20, 1, 20))
    with pytest.raises(DataError, match=r"class 'bee' has 1 images but ipc=2"):
        make(name).distill(data, IPC, seed=0, device=CPU)


@pytest.mark.parametrize("name", NAMES)
def test_missing_class_names_it(name):
    data = tiny(per_class=(20, 20, 0))
    with pytest.raises(DataError, match=r"class 'cat' has no training images"):
        make(name).distill(data, IPC, seed=0, device=CPU)


@pytest.mark.parametrize("name", NAMES)
def test_non_positive_ipc_rejected(name, data):
    with pytest.raises(ConfigError, match="distill.ipc"):
        make(name).distill(data, 0, seed=0, device=CPU)


@pytest.mark.parametrize("name", NAMES)
def test_progress_reports_within_bounds(name, data):
    calls = []
    make(name).distill(data, IPC, seed=0, device=CPU, progress=lambda done, total, **info: calls.append((done, total)))
    assert calls, "a distiller should report progress"
    assert all(0 < done <= total for done, total in calls)
    assert calls[-1][0] == calls[-1][1]


@pytest.mark.parametrize("name", NAMES)
def test_iterative_methods_lower_their_objective(name, runs):
    history = runs(name)[0].history
    if not DISTILLERS.get(name).iterative:
        assert history == ()
        return
    assert len(history) >= 10
    first, last = history[:5], history[-5:]
    assert sum(last) / len(last) < sum(first) / len(first)
