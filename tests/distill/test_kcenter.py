"""k-center (Sener & Savarese, ICLR 2018) against the distiller contract; its own tests are in test_coresets.py."""

from proxynas.distill import KCenter
from proxynas.testing.distillers import DistillerContract


class TestKCenterContract(DistillerContract):
    distiller = KCenter(width=16, depth=2)
