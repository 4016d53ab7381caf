import pytest
import torch

from proxynas.data.digits import Digits
from proxynas.proxies import PROXIES, ParamsProxy, ProxyContext, TrainProxy
from proxynas.spaces import NB201Space

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def ctx():
    data = Digits().load()
    return ProxyContext(
        space=NB201Space(channels=4, cells_per_stage=1),
        dataset=data,
        train_data=data.train,
        device=torch.device("cpu"),
        seed=0,
    )


def test_registry_holds_the_proxies():
    assert {"params", "train"} <= set(PROXIES.names())


def test_params_proxy_counts_trainable_parameters(ctx):
    net = ctx.space.build(ARCH, in_channels=1, num_classes=10, image_size=8)
    assert ParamsProxy().score(ARCH, ctx) == sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_train_proxy_is_deterministic_and_learns(ctx):
    proxy = TrainProxy(epochs=2, batch_size=64, lr=0.1)
    a, b = proxy.score(ARCH, ctx), proxy.score(ARCH, ctx)
    assert a == b
    assert a > 30.0  # 10 classes: chance is 10%


def test_train_proxy_uses_the_given_training_data(ctx):
    tiny = ctx.dataset.train.subset(torch.arange(10))
    proxy = TrainProxy(epochs=2, batch_size=64, lr=0.1)
    full = proxy.score(ARCH, ctx)
    few = proxy.score(ARCH, ProxyContext(ctx.space, ctx.dataset, tiny, ctx.device, 0))
    assert few < full
