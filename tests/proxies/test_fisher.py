"""The ``fisher`` zero-cost proxy against the proxy contract; its own tests are in test_zero_cost.py."""

from proxynas.proxies import FisherProxy
from proxynas.testing.proxies import ProxyContract


class TestFisherContract(ProxyContract):
    proxy = FisherProxy()
