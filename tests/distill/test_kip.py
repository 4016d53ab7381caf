"""KIP (Nguyen et al., ICLR 2021) against the distiller contract; its own tests are in test_meta_matching.py."""

from proxynas.distill import KIP
from proxynas.testing.distillers import DistillerContract


class TestKIPContract(DistillerContract):
    distiller = KIP(iterations=12, learn_labels=True)  # learned labels: checks soft labels too
