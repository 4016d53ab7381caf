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
    EvaluationProtocol,
    check_finite,
    check_ipc,
)
from proxynas.distill.cafe import CAFE
from proxynas.distill.dc import DC, DSAMatching
from proxynas.distill.dcc import DCC, DSAC
from proxynas.distill.dd import DD
from proxynas.distill.dm import DM
from proxynas.distill.factorized import Factorization, FactorizedDistiller
from proxynas.distill.frepo import FRePo
from proxynas.distill.haba import HaBa
from proxynas.distill.gradient_matching import GradientMatching, gradient_distance
from proxynas.distill.herding import Herding
from proxynas.distill.idc import IDC
from proxynas.distill.kcenter import KCenter
from proxynas.distill.kfs import KFS
from proxynas.distill.kip import KIP
from proxynas.distill.linba import LinBa
from proxynas.distill.mtt import MTT
from proxynas.distill.random import RandomCoreset
from proxynas.distill.rfad import RFAD
from proxynas.distill.tesla import TESLA
from proxynas.registry import discover

discover(__name__)

__all__ = [
    "CAFE",
    "DC",
    "DCC",
    "DD",
    "DISTILLERS",
    "DM",
    "DSAC",
    "DSAMatching",
    "EvaluationProtocol",
    "FRePo",
    "Distiller",
    "Factorization",
    "FactorizedDistiller",
    "FeatureCoreset",
    "GradientMatching",
    "HaBa",
    "Herding",
    "IDC",
    "KCenter",
    "KFS",
    "KIP",
    "LABEL_LOSSES",
    "LinBa",
    "MTT",
    "PreparedDistiller",
    "RFAD",
    "RandomCoreset",
    "Summary",
    "TESLA",
    "check_finite",
    "check_ipc",
    "gradient_distance",
]
