"""Search curves rendered to PNG bytes (matplotlib Agg, like :mod:`proxynas.plots`)."""

from __future__ import annotations

from typing import Mapping, Sequence

from proxynas.plots import _png, plt  # the Agg backend is selected there, before pyplot loads


def _panel(ax, curves: Mapping[str, Sequence[float]], ylabel: str, *, regret: bool = False) -> None:
    for name, ys in curves.items():
        ax.step(range(1, len(ys) + 1), ys, where="post", label=name)
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    finite = [y for ys in curves.values() for y in ys if y == y]
    if regret and finite and min(finite) >= 0:
        # regret spans decades and reaches 0 at the optimum: log above 0.01, linear below
        ax.set_yscale("symlog", linthresh=0.01)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)


def best_so_far_png(
    curves: Mapping[str, Sequence[float]],
    *,
    ylabel: str = "best proxy value",
    regret: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
) -> bytes:
    """Best value after each trial, one line per search; with ``regret``, a second panel of the
    regret of the best-by-proxy arch after each trial."""
    panels = 2 if regret else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    _panel(axes[0][0], curves, ylabel)
    if regret:
        _panel(axes[0][1], regret, "regret of the found arch", regret=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def regret_png(curves: Mapping[str, Sequence[float]], *, title: str = "") -> bytes:
    """Regret of the found arch after each trial, one line per search (e.g. mean over seeds)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    _panel(ax, curves, "regret of the found arch", regret=True)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _png(fig)
