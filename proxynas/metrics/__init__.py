"""Rank metrics: how well proxy scores order architectures like the reference."""

from proxynas.metrics.rank import (
    RankMetrics,
    bootstrap_ci,
    kendall,
    ndcg,
    rank_metrics,
    spearman,
    topk_precision,
    topk_spearman,
)

__all__ = [
    "RankMetrics",
    "bootstrap_ci",
    "kendall",
    "ndcg",
    "rank_metrics",
    "spearman",
    "topk_precision",
    "topk_spearman",
]
