"""The ``grad_norm`` zero-cost proxy against the proxy contract; its own tests are in test_zero_cost.py."""

from proxynas.proxies import GradNormProxy
from proxynas.testing.proxies import ProxyContract


class TestGradNormContract(ProxyContract):
    proxy = GradNormProxy()
