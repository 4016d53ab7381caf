"""Networks side by side (proxynas.models.parallel) and their training (proxynas.training.fit_side_by_side)."""

import re
from dataclasses import replace

import pytest
import torch
from torch import nn

from proxynas.data.types import ImageData
from proxynas.errors import DivergenceError
from proxynas.models.parallel import SideBySide
from proxynas.training import TrainSettings, fit, fit_side_by_side

CPU = torch.device("cpu")
ARCHS = (
    "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|skip_connect~2|",
)


def _blobs(n=60, k=3, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, 1, size, size, generator=g) * 0.3 + y.view(-1, 1, 1, 1).float()
    return ImageData(x, y, tuple("abc"[:k]), (0.0,), (1.0,))


def _network(arch, space="nb201"):
    from proxynas.spaces import SEARCH_SPACES

    built = SEARCH_SPACES.get(space)() if space == "convnet720" else SEARCH_SPACES.get(space)(channels=4, cells_per_stage=1)
    torch.manual_seed(0)
    return built.build(arch, in_channels=1, num_classes=3, image_size=8)


def test_its_forward_is_each_networks_logits_in_its_column():
    nets = [_network(a) for a in ARCHS]
    together = SideBySide(nets)
    x = torch.randn(5, 1, 8, 8)
    out = together(x)
    assert out.shape == (5, 3, 3) and len(together) == 3
    for k, net in enumerate(nets):
        assert torch.equal(out[:, k], net(x))
    assert sum(p.numel() for p in together.parameters()) == sum(p.numel() for n in nets for p in n.parameters())


def test_it_needs_a_network():
    with pytest.raises(ValueError, match="at least one network"):
        SideBySide([])


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_networks_trained_side_by_side_train_bit_for_bit_as_alone_on_a_cpu(graphs, channels_last):
    data = _blobs()
    settings = TrainSettings(epochs=3, batch_size=16, augment="dsa", curve_every=1, cuda_graphs=graphs)
    together = fit_side_by_side([_network(a) for a in ARCHS], data, settings, device=CPU, seed=0, labels=ARCHS,
                                eval_data=data, channels_last=channels_last)
    alone = [fit(_network(a), data, replace(settings, cuda_graphs=False), device=CPU, seed=0, eval_data=data,
                 channels_last=channels_last).curve for a in ARCHS]
    assert together == alone


def test_a_teacher_relabels_side_by_side_as_it_relabels_one_network():
    data = _blobs()
    torch.manual_seed(3)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    settings = TrainSettings(epochs=2, batch_size=16)
    together = fit_side_by_side([_network(a) for a in ARCHS[:2]], data, settings, device=CPU, seed=0,
                                labels=ARCHS[:2], eval_data=data, teacher=teacher)
    alone = [fit(_network(a), data, settings, device=CPU, seed=0, eval_data=data, teacher=teacher).curve
             for a in ARCHS[:2]]
    assert together == alone


def test_a_space_that_cannot_fuse_trains_side_by_side():
    from proxynas.spaces import SEARCH_SPACES

    archs = SEARCH_SPACES.get("convnet720")().sample(2, seed=0)
    data = _blobs()
    settings = TrainSettings(epochs=2, batch_size=16)
    together = fit_side_by_side([_network(a, "convnet720") for a in archs], data, settings, device=CPU, seed=0,
                                labels=archs, eval_data=data)
    alone = [fit(_network(a, "convnet720"), data, settings, device=CPU, seed=0, eval_data=data).curve for a in archs]
    assert together == alone


def test_a_diverging_network_is_named():
    nets = [_network(a) for a in ARCHS]
    with torch.no_grad():
        nets[1].classifier.weight.fill_(float("nan"))
    with pytest.raises(DivergenceError, match=re.escape(f"training {ARCHS[1]}: loss became nan at epoch 0")):
        fit_side_by_side(nets, _blobs(), TrainSettings(epochs=2), device=CPU, seed=0, labels=ARCHS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="runs networks on CUDA streams: needs a CUDA device")
@pytest.mark.parametrize("graphs", [False, True])
def test_networks_on_cuda_streams_train_as_alone_up_to_float_rounding(graphs, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # rounding, not atomics, is what may differ
    cuda = torch.device("cuda")
    data = _blobs()
    settings = TrainSettings(epochs=2, batch_size=16, augment="dsa", amp=False, cuda_graphs=graphs)
    together = fit_side_by_side([_network(a) for a in ARCHS], data, settings, device=cuda, seed=0, labels=ARCHS,
                                eval_data=data, channels_last=True)
    alone = [fit(_network(a), data, replace(settings, cuda_graphs=False), device=cuda, seed=0, eval_data=data,
                 channels_last=True).curve for a in ARCHS]
    for mine, theirs in zip(together, alone):
        assert [r.train_loss for r in mine] == pytest.approx([r.train_loss for r in theirs], rel=1e-3)
        assert mine[-1].val_acc == pytest.approx(theirs[-1].val_acc, abs=100 / 60 + 1e-9)
