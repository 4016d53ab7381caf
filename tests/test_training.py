import pytest
import torch
from torch import nn

from proxynas.data.types import ImageData
from proxynas.errors import DivergenceError
from proxynas.training import TrainSettings, accuracy, train_model

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
