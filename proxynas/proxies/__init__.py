"""Proxies: data proxies, baselines and references behind one interface."""

from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.params import ParamsProxy
from proxynas.proxies.training import TrainProxy

__all__ = ["PROXIES", "Proxy", "ProxyContext", "ParamsProxy", "TrainProxy"]
