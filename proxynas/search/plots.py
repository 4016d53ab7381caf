"""Search curves rendered to PNG bytes (matplotlib Agg, like :mod:`proxynas.plots`)."""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

from proxynas.plots import _png, plt  # the Agg backend is selected there, before pyplot loads
from proxynas.search.search import SearchResult, running_best


def _panel(
    ax,
    curves: Mapping[str, Sequence[float]],
    ylabel: str,
    *,
    regret: bool = False,
    optimum: float | None = None,
    dotted: Collection[str] = (),
) -> None:
    for name, ys in curves.items():
        style = dict(ls=":", lw=2.2) if name in dotted else {}
        ax.step(range(1, len(ys) + 1), ys, where="post", label=name, **style)
    if optimum is not None:
        ax.axhline(optimum, ls="--", color="0.3", lw=1, label=f"space optimum {optimum:.4g}")
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    finite = [y for ys in curves.values() for y in ys if y == y]
    if regret and finite and min(finite) >= 0 and max(finite) > 10 * max(min(finite), 0.01):
        # regret spanning decades down to 0 at the optimum: log above 0.01, linear below (within one
        # decade a log axis would show no tick at all)
        ax.set_yscale("symlog", linthresh=0.01)
    ax.grid(alpha=0.3)
    if len(curves) > 1 or optimum is not None:
        ax.legend(fontsize=8)


def best_so_far_png(
    curves: Mapping[str, Sequence[float]],
    *,
    ylabel: str = "best proxy value",
    optimum: float | None = None,
    reference: Mapping[str, Sequence[float]] | None = None,
    reference_ylabel: str = "reference value",
    reference_optimum: float | None = None,
    regret: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
) -> bytes:
    """Best value after each trial, one line per search, with the space's ``optimum`` when known.

    With ``reference``, a panel of ground-truth curves (e.g. of the found arch and
    the best one visited) against ``reference_optimum``; with ``regret``, a panel
    of the regret of the best-by-proxy arch after each trial.
    """
    extra = [p for p in (reference, regret) if p]
    fig, axes = plt.subplots(1, 1 + len(extra), figsize=(5 * (1 + len(extra)), 3.6), squeeze=False)
    axes = iter(axes[0])
    _panel(next(axes), curves, ylabel, optimum=optimum)
    if reference:
        # drawn dotted over the others: a curve equal to another (an oracle's found and visited) stays visible
        _panel(next(axes), reference, reference_ylabel, optimum=reference_optimum, dotted=list(reference)[1:])
    if regret:
        _panel(next(axes), regret, "regret of the found arch", regret=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def search_png(
    result: SearchResult, *, label: str, ylabel: str, optimum: float | None = None, title: str = ""
) -> bytes:
    """The best-so-far figure of one search: its objective (``optimum``: the objective's best in the
    space, when known) and, with a reference table, the ground truth of the found arch and of the
    best arch visited so far against the space's best, and the regret."""
    reference = regret = None
    if result.reference_so_far is not None:
        reference = {
            "found arch (best by proxy)": result.reference_so_far,
            # what an oracle would pick among the archs this search scored: the proxy's ranking error is the gap
            "best arch visited": running_best([t.reference for t in result.trials]),
        }
        regret = {label: result.regret_so_far}
    return best_so_far_png(
        {label: result.best_so_far},
        ylabel=ylabel,
        optimum=optimum,
        reference=reference,
        reference_optimum=result.reference_best,
        regret=regret,
        title=title,
    )


def regret_png(curves: Mapping[str, Sequence[float]], *, title: str = "") -> bytes:
    """Regret of the found arch after each trial, one line per search (e.g. mean over seeds)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    _panel(ax, curves, "regret of the found arch", regret=True)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _png(fig)
