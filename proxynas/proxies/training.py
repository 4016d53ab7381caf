"""The data proxy: train the architecture on some data, report held-out test accuracy.

With ``train_data`` = a distilled summary this is the proxy whose rank
preservation proxynas measures (the DC-Bench NAS protocol, Cui et al., NeurIPS
2022 Datasets & Benchmarks, Sec. 3.4); with the full training split it is the
reference (NAS-Bench-201's protocol, Dong & Yang, ICLR 2020, Sec. 2.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.training import TrainSettings, accuracy, train_model


@PROXIES.register("train")
@dataclass(frozen=True)
class TrainProxy(TrainSettings, Proxy):
    """Test accuracy (%) after training on ``ctx.train_data`` with these SGD settings."""

    unit = "test accuracy %"
    parallel = True

    def score(self, arch: str, ctx: ProxyContext) -> float:
        torch.manual_seed(ctx.seed)
        shape = ctx.dataset.shape
        model = ctx.space.build(
            arch, in_channels=shape[0], num_classes=ctx.dataset.num_classes, image_size=shape[1]
        )
        train_model(
            model,
            ctx.train_data,
            self,
            device=ctx.device,
            seed=ctx.seed,
            label=arch,
            setting_prefix=ctx.setting_prefix,
            progress=ctx.progress,
            soft_labels=ctx.soft_labels,
            label_loss=ctx.label_loss,
        )
        return accuracy(model, ctx.dataset.test, device=ctx.device)
