"""The ``synflow`` zero-cost proxy against the proxy contract; its own tests are in test_zero_cost.py."""

from proxynas.proxies import SynflowProxy
from proxynas.testing.proxies import ProxyContract


class TestSynflowContract(ProxyContract):
    proxy = SynflowProxy()
