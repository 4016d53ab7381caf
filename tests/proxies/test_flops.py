"""The ``flops`` zero-cost proxy against the proxy contract; its own tests are in test_zero_cost.py."""

from proxynas.proxies import FlopsProxy
from proxynas.testing.proxies import ProxyContract


class TestFlopsContract(ProxyContract):
    proxy = FlopsProxy()
