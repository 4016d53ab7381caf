"""Plots people would rather look at than tables, rendered to PNG bytes."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or GPU machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from proxynas.data.types import ImageData  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_grid_png(data: ImageData, title: str = "") -> bytes:
    """One row per class, one column per image (the usual distilled-images figure)."""
    per_class = [data.of_class(k) for k in range(data.num_classes)]
    cols = max(len(p) for p in per_class)
    c, h, w = data.shape
    cells = torch.zeros(data.num_classes * cols, c, h, w)
    for k, imgs in enumerate(per_class):
        cells[k * cols : k * cols + len(imgs)] = data.denormalize(imgs)
    grid = make_grid(cells, nrow=cols, padding=1, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(max(2.0, cols * 0.5), max(2.0, data.num_classes * 0.5)))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest", cmap="gray")
    ax.set_yticks([(h + 1) * (k + 0.5) for k in range(data.num_classes)], data.classes)
    ax.set_xticks([])
    if title:
        ax.set_title(title)
    return _png(fig)


def scatter_png(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> bytes:
    """Proxy value (x) against reference (y), one panel per proxy."""
    n = len(series)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, (x, y)) in zip(axes.flat, series.items()):
        ax.scatter(x, y, s=14, alpha=0.8)
        ax.set_title(name)
        ax.set_xlabel(xlabel if name != "params" else "parameters")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)
