"""ConvNet (Zhao et al. 2021 DC, appendix): every choice builds, shapes and errors."""

import itertools

import pytest
import torch

from proxynas.models import ACTIVATIONS, NORMS, POOLS, ConvNet

SHAPES = [(3, 32), (1, 8)]  # (channels, image size): CIFAR-like and the smallest supported


@pytest.mark.parametrize("act,norm,pool", list(itertools.product(ACTIVATIONS, NORMS, POOLS)))
@pytest.mark.parametrize("channels,size", SHAPES)
def test_every_choice_builds_and_runs(act, norm, pool, channels, size):
    net = ConvNet(channels, 10, size, width=8, depth=3, act=act, norm=norm, pool=pool)
    x = torch.randn(4, channels, size, size)
    logits, feats = net(x), net.embed(x)
    assert logits.shape == (4, 10)
    assert feats.shape == (4, net.embed_dim)
    assert torch.isfinite(logits).all()


def test_choice_tables_are_the_documented_ones():
    assert set(ACTIVATIONS) == {"sigmoid", "relu", "leakyrelu"}
    assert set(NORMS) == {"none", "batchnorm", "layernorm", "instancenorm", "groupnorm"}
    assert set(POOLS) == {"none", "maxpool", "avgpool"}


@pytest.mark.parametrize(
    "channels,size,depth,pool,expected",
    [
        (3, 32, 3, "avgpool", 128 * 4 * 4),  # DC's 2048-d CIFAR embedding
        (1, 8, 3, "avgpool", 128 * 1 * 1),  # 8 -> 4 -> 2 -> 1
        (1, 8, 4, "maxpool", 128 * 1 * 1),  # pooling stops at 1x1 instead of failing
        (1, 8, 2, "none", 128 * 8 * 8),
        (3, 28, 3, "avgpool", 128 * 3 * 3),  # 28 -> 14 -> 7 -> 3 (floor)
    ],
)
def test_embed_dim(channels, size, depth, pool, expected):
    net = ConvNet(channels, 5, size, depth=depth, pool=pool)
    assert net.embed_dim == expected
    assert net.embed(torch.randn(2, channels, size, size)).shape == (2, expected)


def test_default_is_dc_convnet():
    net = ConvNet(3, 10, 32)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) == 3 and all(c.out_channels == 128 and c.kernel_size == (3, 3) for c in convs)
    # DC's instancenorm: GroupNorm with one group per channel and an affine.
    assert len(norms) == 3 and all(n.num_groups == 128 and n.affine for n in norms)
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in net.modules()) == 3


def test_gradient_reaches_input():
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    ConvNet(1, 3, 8, width=8).embed(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs,allowed",
    [
        ({"act": "tanh"}, "sigmoid, relu, leakyrelu"),
        ({"norm": "weightnorm"}, "none, batchnorm, layernorm, instancenorm, groupnorm"),
        ({"pool": "stridedconv"}, "none, maxpool, avgpool"),
    ],
)
def test_unknown_choice_lists_allowed(kwargs, allowed):
    with pytest.raises(ValueError, match=allowed):
        ConvNet(3, 10, 32, **kwargs)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"depth": 0}, {"num_classes": 0}, {"image_size": -1}])
def test_non_positive_sizes_rejected(kwargs):
    args = {"in_channels": 3, "num_classes": 10, "image_size": 32, **kwargs}
    with pytest.raises(ValueError, match="must be > 0"):
        ConvNet(**args)
