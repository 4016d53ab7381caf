"""The ``snip`` zero-cost proxy against the proxy contract; its own tests are in test_zero_cost.py."""

from proxynas.proxies import SnipProxy
from proxynas.testing.proxies import ProxyContract


class TestSnipContract(ProxyContract):
    proxy = SnipProxy()
