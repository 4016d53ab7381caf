"""The ``naswot`` zero-cost proxy against the proxy contract; its own tests are in test_zero_cost.py."""

from proxynas.proxies import NaswotProxy
from proxynas.testing.proxies import ProxyContract


class TestNaswotContract(ProxyContract):
    proxy = NaswotProxy()
