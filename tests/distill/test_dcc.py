"""DCC (Lee et al., ICML 2022) against the distiller contract; its own tests are in test_gradient_matching.py."""

from proxynas.distill import DCC
from proxynas.testing.distillers import DistillerContract


class TestDCCContract(DistillerContract):
    distiller = DCC(iterations=12, match_steps=1, net_epochs=1, batch_real=10, width=16, depth=2)
