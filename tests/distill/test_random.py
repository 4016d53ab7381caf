"""The random coreset against the distiller contract; its own tests are in test_coresets.py."""

from proxynas.distill import RandomCoreset
from proxynas.testing.distillers import DistillerContract


class TestRandomCoresetContract(DistillerContract):
    distiller = RandomCoreset()
