"""Dataset distillation and coreset selection: ``train + ipc -> Summary``.

Importing this package registers every built-in method in :data:`DISTILLERS`.
"""

from proxynas.distill.base import DISTILLERS, Distiller, FeatureCoreset, Summary, check_finite, check_ipc
from proxynas.distill.dm import DM
from proxynas.distill.dsa import DSA
from proxynas.distill.herding import Herding
from proxynas.distill.kcenter import KCenter
from proxynas.distill.random import RandomCoreset

__all__ = [
    "DISTILLERS",
    "DM",
    "DSA",
    "Distiller",
    "FeatureCoreset",
    "Herding",
    "KCenter",
    "RandomCoreset",
    "Summary",
    "check_finite",
    "check_ipc",
]
