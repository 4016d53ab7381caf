"""Dataset distillation and coreset selection: ``train + ipc -> Summary``.

Importing this package registers every method in :data:`DISTILLERS`: each
module of the package is imported (:func:`proxynas.registry.discover`), so a
new method is one module dropped in here, listed nowhere. The built-in
methods are also re-exported by name.
"""

from proxynas.distill.base import (
    DISTILLERS,
    LABEL_LOSSES,
    Distiller,
    FeatureCoreset,
    PreparedDistiller,
    Summary,
    check_finite,
    check_ipc,
)
from proxynas.distill.dc import DC
from proxynas.distill.dcc import DCC
from proxynas.distill.dd import DD
from proxynas.distill.dm import DM
from proxynas.distill.frepo import FRePo
from proxynas.distill.gradient_matching import GradientMatching, gradient_distance
from proxynas.distill.herding import Herding
from proxynas.distill.idc import IDC
from proxynas.distill.kcenter import KCenter
from proxynas.distill.kip import KIP
from proxynas.distill.mtt import MTT
from proxynas.distill.random import RandomCoreset
from proxynas.distill.tesla import TESLA
from proxynas.registry import discover

discover(__name__)

__all__ = [
    "DC",
    "DCC",
    "DD",
    "DISTILLERS",
    "DM",
    "FRePo",
    "Distiller",
    "FeatureCoreset",
    "GradientMatching",
    "Herding",
    "IDC",
    "KCenter",
    "KIP",
    "LABEL_LOSSES",
    "MTT",
    "PreparedDistiller",
    "RandomCoreset",
    "Summary",
    "TESLA",
    "check_finite",
    "check_ipc",
    "gradient_distance",
]
