"""Herding (Welling, ICML 2009) against the distiller contract; its own tests are in test_coresets.py."""

from proxynas.distill import Herding
from proxynas.testing.distillers import DistillerContract


class TestHerdingContract(DistillerContract):
    distiller = Herding(width=16, depth=2)


class TestHerdingOnPixelsContract(DistillerContract):
    """On pixels herding is deterministic: the contract checks it ignores the seed."""

    distiller = Herding(features="pixels")
