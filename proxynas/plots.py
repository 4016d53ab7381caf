"""Plots people would rather look at than tables, rendered to PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Any, Collection, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or GPU machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from proxynas.data.types import ImageData  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_grid_png(data: ImageData, title: str = "") -> bytes:
    """One row per class, one column per image (the usual distilled-images figure)."""
    # imported here: torchvision's package import pulls in torch._dynamo (~3 s), which every CLI command that
    # imports the pipeline (a cached run, a bad-input error) would otherwise pay
    from torchvision.utils import make_grid

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


def _signed(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "nan"


def rank_title(name: str, metrics: Mapping[str, float], ci: float | None = None) -> str:
    """``name`` over its Spearman and Kendall, each with its bootstrap interval when that is defined.

    ``metrics`` is :meth:`~proxynas.metrics.rank.RankMetrics.as_dict` (``spearman``,
    ``spearman_lo``, ``spearman_hi``, ``kendall``...); ``ci`` is the interval's
    level, e.g. 0.95. An undefined interval (no bootstrap, too few archs) is left out.
    """
    lines = [name]
    for key, label in (("spearman", "Spearman"), ("kendall", "Kendall")):
        if key not in metrics:
            continue
        text = f"{label} {_signed(float(metrics[key]))}"
        lo, hi = float(metrics.get(f"{key}_lo", math.nan)), float(metrics.get(f"{key}_hi", math.nan))
        if math.isfinite(lo) and math.isfinite(hi):
            level = f"{ci * 100:g}% CI " if ci else ""
            text += f" [{level}{lo:+.2f}, {hi:+.2f}]"
        lines.append(text)
    return "\n".join(lines)


def ranks(values: Sequence[float]) -> list[float]:
    """The rank of each value, 1 for the highest; tied values share their average rank (as Spearman's do).

    ``-inf`` (a proxy's "cannot train") ranks last; NaN has no rank (ValueError).
    """
    a = np.asarray(values, dtype=np.float64)
    if np.isnan(a).any():
        raise ValueError(f"value {int(np.flatnonzero(np.isnan(a))[0])} is NaN and has no rank; drop that arch")
    return [float(r) for r in rankdata(-a, method="average")]


def _panels(n: int, width: float = 4.0, height: float = 3.4):
    """A figure of ``n`` panels, three a row, and its axes (the unused ones hidden)."""
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def scatter_png(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    titles: Mapping[str, str] | None = None,
) -> bytes:
    """Proxy value (x) against reference (y), one panel per proxy, titled ``titles[name]`` (default the name)."""
    titles = titles or {}
    fig, axes = _panels(len(series))
    for ax, (name, (x, y)) in zip(axes, series.items()):
        ax.scatter(x, y, s=14, alpha=0.8)
        ax.set_title(titles.get(name, name), fontsize=9)
        ax.set_xlabel(xlabel if name != "params" else "parameters")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def rank_vs_rank_png(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    titles: Mapping[str, str] | None = None,
    top_k: int | None = None,
    title: str = "",
) -> bytes:
    """Reference rank (x) against proxy rank (y) of every arch, one panel per proxy (1 = best).

    ``series`` maps a proxy to ``(proxy values, reference values)``, as for
    :func:`scatter_png`. A perfect proxy puts every point on the diagonal; the
    shaded square holds the archs both call top-``top_k``.
    """
    titles = titles or {}
    fig, axes = _panels(len(series), width=3.6, height=3.6)
    for ax, (name, (proxy, reference)) in zip(axes, series.items()):
        x, y = ranks(reference), ranks(proxy)
        n = len(x)
        if top_k:
            k = min(top_k, n)
            ax.add_patch(Rectangle((0.5, 0.5), k, k, color="tab:green", alpha=0.12, lw=0))
        ax.plot([0.5, n + 0.5], [0.5, n + 0.5], ls="--", color="0.5", lw=0.8)
        ax.scatter(x, y, s=14, alpha=0.8)
        ax.set_xlim(0.5, n + 0.5)
        ax.set_ylim(0.5, n + 0.5)
        ax.set_aspect("equal")
        ax.set_title(titles.get(name, name), fontsize=9)
        ax.set_xlabel("reference rank (1 = best)")
        ax.set_ylabel("proxy rank")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def learning_curves_png(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    highlight: Collection[str] = (),
    highlight_label: str = "highlighted",
    title: str = "",
) -> bytes:
    """Accuracy and training loss against epoch, one line per arch: the ``highlight`` ones in colour.

    ``curves`` maps an arch to its curve, one mapping per epoch with ``epoch``,
    ``train_loss`` and ``val_acc`` (None where it was not measured, see the
    training proxy's ``curve_every``). Most archs are drawn thin and grey so that
    a few hundred stay readable; the highlighted ones go on top.
    """
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    losses = []
    # the highlighted archs are drawn last, so on top
    for arch in sorted(curves, key=lambda a: a in highlight):
        points = curves[arch]
        marked = arch in highlight
        style = dict(color="tab:orange", lw=1.5, alpha=0.9, zorder=3) if marked else \
            dict(color="0.55", lw=0.8, alpha=0.5, zorder=2)
        for ax, key in ((acc, "val_acc"), (loss, "train_loss")):
            measured = [(p["epoch"], float(p[key])) for p in points if p.get(key) is not None]
            if not measured:
                continue
            xs, ys = zip(*measured)
            if key == "train_loss":
                losses += ys
            # a curve measured once (only the final evaluation) is a point, not a line
            ax.plot(xs, ys, marker="o" if len(xs) == 1 else None, ms=3, **style)
    acc.set_ylabel("val_acc (%)")
    loss.set_ylabel("train_loss")
    if losses and min(losses) > 0 and max(losses) > 10 * min(losses):
        loss.set_yscale("log")  # losses falling by decades: a linear axis hides all but the first epochs
    for ax in (acc, loss):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    marked = sum(1 for a in curves if a in highlight)
    handles = [Line2D([], [], color="0.55", lw=0.8, label=f"other archs ({len(curves) - marked})")]
    if marked:
        handles.append(Line2D([], [], color="tab:orange", lw=1.5, label=highlight_label))
    acc.legend(handles=handles, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)
