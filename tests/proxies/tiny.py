"""Tiny synthetic data and NB201 archs shared by the proxy tests."""

import torch

from proxynas.data.types import DatasetSplits, ImageData
from proxynas.proxies import ProxyContext
from proxynas.spaces import NB201Space

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
SPACE = NB201Space(channels=4, cells_per_stage=1)


def make_data(channels: int = 3, n: int = 40, seed: int = 0, size: int = 8) -> DatasetSplits:
    """``n`` standard-normal images of ``size`` x ``size``, labels cycling over 10 classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=g)
    y = torch.arange(n) % 10
    data = ImageData(x, y, tuple(str(k) for k in range(10)), (0.0,) * channels, (1.0,) * channels)
    return DatasetSplits("synthetic", data, data, data)


def make_ctx(data: DatasetSplits, seed: int = 0, space=SPACE) -> ProxyContext:
    return ProxyContext(space=space, dataset=data, train_data=data.train, device=torch.device("cpu"), seed=seed)
