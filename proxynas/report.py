"""Plain-text rendering of the rank report (what `proxynas run` prints)."""

from __future__ import annotations

import math
from typing import Any, Mapping


def _num(x: float, fmt: str = "+.3f") -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _ci(row: Mapping[str, Any], key: str) -> str:
    return f"{_num(row[key])} [{_num(row[key + '_lo'])}, {_num(row[key + '_hi'])}]"


def format_report(report: Mapping[str, Any], random_rows: frozenset[str] = frozenset()) -> str:
    """The rank table: one row per proxy, metrics with bootstrap CIs, and costs; then :func:`verdict`."""
    k, ci = report["top_k"], int(round(report["ci"] * 100))
    # wide enough for component rows such as ``dm:val_acc@25%``
    width = max([10, *(len(row["proxy"]) for row in report["rows"])])
    header = (
        f"{'proxy':<{width}} {'Spearman [' + str(ci) + '% CI]':<26} {'Kendall [CI]':<26} "
        f"{'top-' + str(k) + ' prec.':>11} {'top-' + str(k) + ' Spearman':>14} {'proxy s':>9} {'ref s':>9}"
    )
    lines = [
        f"{report['num_archs']} architectures; reference: mean test accuracy "
        f"{report['reference_mean']:.2f}% (min {report['reference_min']:.2f}, max {report['reference_max']:.2f}), "
        f"{report['reference_seconds']:.1f} s of full-data training",
        header,
        "-" * len(header),
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['proxy']:<{width}} {_ci(row, 'spearman'):<26} {_ci(row, 'kendall'):<26} "
            f"{_num(row['topk_precision'], '.2f'):>11} {_num(row['topk_spearman']):>14} "
            f"{row['proxy_seconds']:>9.1f} {row['reference_seconds']:>9.1f}"
        )
    lines.append(verdict(report, random_rows))
    return "\n".join(lines)


def verdict(report: Mapping[str, Any], random_rows: frozenset[str] = frozenset()) -> str:
    """One sentence: which row ranked best, and whether distillation beat the random subset.

    ``random_rows`` are the rows trained on a random subset (the baseline a
    distilled summary must beat); the other ``distilled`` rows are the
    distillers. "Beat" is the point estimates; the sentence says when the
    random row's Spearman lies inside the distiller's bootstrap interval, so
    the difference is not resolved by this many architectures.
    """
    rows = [r for r in report["rows"] if not math.isnan(r["spearman"])]
    if not rows:
        return "No row has a rank correlation (the reference or every proxy is constant)."
    best = max(rows, key=lambda r: r["spearman"])
    ci = int(round(report["ci"] * 100))
    sentence = f"Best ranking: {best['proxy']} (Spearman {_ci(best, 'spearman')})."
    randoms = [r for r in rows if r["proxy"] in random_rows]
    distilled = [r for r in rows if r.get("kind") == "distilled" and r["proxy"] not in random_rows]
    if randoms and distilled:
        top, rand = max(distilled, key=lambda r: r["spearman"]), max(randoms, key=lambda r: r["spearman"])
        beat = "beat" if top["spearman"] > rand["spearman"] else "did not beat"
        within = top["spearman_lo"] <= rand["spearman"] <= top["spearman_hi"]
        sentence += (
            f" Distillation {beat} the random subset: {top['proxy']} {_num(top['spearman'])} vs"
            f" {rand['proxy']} {_num(rand['spearman'])}"
            + (f", within {top['proxy']}'s {ci}% CI, so not resolved by {report['num_archs']} architectures."
               if within else ".")
        )
    return sentence
