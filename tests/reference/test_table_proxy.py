"""The NB201 table lookup (``nb201_table``, registered by proxynas.reference) against the proxy contract.

Its own tests are in tests/reference/test_nb201_table.py. The instance reads the
table shipped with proxynas; the all-conv cell's benchmark accuracy is far above
the disconnected cell's (about 10%, chance).
"""

from proxynas.reference import NB201TableProxy
from proxynas.testing.proxies import ProxyContract


class TestNB201TableContract(ProxyContract):
    proxy = NB201TableProxy()
