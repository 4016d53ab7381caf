"""DD (Wang et al. 2018) against the distiller contract; its own tests are in test_meta_matching.py."""

from proxynas.distill import DD
from proxynas.testing.distillers import DistillerContract


class TestDDContract(DistillerContract):
    distiller = DD(iterations=12, width=16, depth=2, inner_steps=3, truncate=3)
