"""Proxies: data proxies, baselines and references behind one interface.

Importing this package registers every proxy of the package in
:data:`PROXIES`: each of its modules is imported
(:func:`proxynas.registry.discover`), so a new proxy is one module dropped in
here, listed nowhere. That includes the zero-cost proxies of Abdelfattah et
al. (ICLR 2021) and Mellor et al. (ICML 2021): ``synflow``, ``snip``,
``grad_norm``, ``fisher``, ``jacob_cov``, ``naswot`` and the ``flops``
baseline, and ``az_nas`` (Lee & Ham, CVPR 2024), which ranks a whole
population of architectures at once. The benchmark lookup ``nb201_table``
lives in :mod:`proxynas.reference` and is registered when that package is
imported.
"""

from proxynas.proxies.az_nas import AZNasProxy
from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.fisher import FisherProxy
from proxynas.proxies.flops import FlopsProxy, count_macs
from proxynas.proxies.grad_norm import GradNormProxy
from proxynas.proxies.jacob_cov import JacobCovProxy
from proxynas.proxies.naswot import NaswotProxy
from proxynas.proxies.params import ParamsProxy
from proxynas.proxies.snip import SnipProxy
from proxynas.proxies.synflow import SynflowProxy
from proxynas.proxies.training import TrainProxy
from proxynas.proxies.zero_cost_batch import ZeroCostBatch
from proxynas.registry import discover

discover(__name__)

#: Registry names of the zero-cost proxies (score an untrained network, no training).
ZERO_COST_PROXIES = ("synflow", "snip", "grad_norm", "fisher", "jacob_cov", "naswot", "flops", "az_nas")

__all__ = [
    "PROXIES",
    "Proxy",
    "ProxyContext",
    "ParamsProxy",
    "TrainProxy",
    "AZNasProxy",
    "FisherProxy",
    "FlopsProxy",
    "GradNormProxy",
    "JacobCovProxy",
    "NaswotProxy",
    "SnipProxy",
    "SynflowProxy",
    "ZeroCostBatch",
    "ZERO_COST_PROXIES",
    "count_macs",
]
