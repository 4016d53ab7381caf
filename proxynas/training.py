"""Train and evaluate one network: shared by data proxies and full-data references."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from proxynas.augment import DSA
from proxynas.data.types import ImageData
from proxynas.errors import DivergenceError
from proxynas.fields import Checked, checked
from proxynas.progress import Progress, null_progress


@dataclass(frozen=True)
class TrainSettings(Checked):
    """SGD recipe. Defaults follow NAS-Bench-201's (Nesterov SGD, cosine, wd 5e-4)."""

    epochs: int = checked(50, ge=1)
    batch_size: int = checked(128, ge=1)
    lr: float = checked(0.1, gt=0)
    momentum: float = checked(0.9, ge=0, lt=1)
    weight_decay: float = checked(5e-4, ge=0)
    nesterov: bool = True
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: Literal["none", "flip", "dsa"] = "none"
    amp: bool = True
    # Train on the labels a distiller learned (KIP, FRePo, TESLA) when the
    # summary carries them; false trains on the images' hard classes.
    soft_labels: bool = True


def _augmenter(kind: str):
    if kind == "dsa":
        dsa = DSA(per_sample=True)  # the DSA paper draws per-image params when training
        return lambda x, step: dsa(x, seed=step)
    if kind == "flip":
        return lambda x, step: torch.where(
            (torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5), x.flip(3), x
        )
    return lambda x, step: x


def _soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target_logits.softmax(dim=1))


def train_model(
    model: nn.Module,
    data: ImageData,
    settings: TrainSettings,
    *,
    device: torch.device,
    seed: int,
    label: str = "model",
    setting_prefix: str = "proxy",
    progress: Progress = null_progress,
    soft_labels: torch.Tensor | None = None,
    label_loss: str = "ce",
) -> nn.Module:
    """Train ``model`` on ``data`` with ``settings``; raise DivergenceError on a non-finite loss.

    With ``soft_labels`` (``[N, K]``, used when ``settings.soft_labels``) the
    loss is MSE onto them (``label_loss="mse"``, kernel-ridge targets) or
    cross-entropy against ``softmax(soft_labels)`` (``"ce"``, logit labels).
    """
    model.to(device).train()
    x_all = data.x.to(device)
    if soft_labels is not None and settings.soft_labels:
        y_all = soft_labels.to(device, torch.float32)
        criterion = F.mse_loss if label_loss == "mse" else _soft_cross_entropy
    else:
        y_all, criterion = data.y.to(device), F.cross_entropy
    n = len(x_all)
    batch = min(settings.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = settings.epochs * steps_per_epoch
    opt = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.nesterov and settings.momentum > 0,
        foreach=True,  # torch only defaults to foreach on CUDA; on CPU it is ~2x faster for small nets
    )
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        if settings.schedule == "cosine"
        else None
    )
    augment = _augmenter(settings.augment)
    gen = torch.Generator().manual_seed(seed)
    use_amp = settings.amp and device.type == "cuda"
    step = 0
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            xb = augment(x_all[idx], seed * 1_000_003 + step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = criterion(model(xb).float(), y_all[idx])
            if not torch.isfinite(loss):
                raise DivergenceError(
                    f"training {label}: loss became {loss.item()} at epoch {epoch}; "
                    f"lower {setting_prefix}.lr (now {settings.lr})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
        progress(epoch + 1, settings.epochs, loss=loss.item())
    return model


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageData, *, device: torch.device, batch_size: int = 1024) -> float:
    """Top-1 accuracy in percent."""
    model.to(device).eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        xb = data.x[start : start + batch_size].to(device)
        yb = data.y[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            correct += int((model(xb).argmax(1) == yb).sum())
    return 100.0 * correct / max(len(data), 1)
