"""The parameter-count baseline against the proxy contract; its own tests are in test_proxies.py."""

from proxynas.proxies import ParamsProxy
from proxynas.testing.proxies import ProxyContract


class TestParamsContract(ProxyContract):
    proxy = ParamsProxy()
