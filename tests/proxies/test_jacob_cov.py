"""The ``jacob_cov`` zero-cost proxy against the proxy contract; its own tests are in test_zero_cost.py."""

from proxynas.proxies import JacobCovProxy
from proxynas.testing.proxies import ProxyContract


class TestJacobCovContract(ProxyContract):
    proxy = JacobCovProxy()
