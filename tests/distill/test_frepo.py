"""FRePo (Zhou et al., NeurIPS 2022) against the distiller contract; its own tests are in test_meta_matching.py."""

from proxynas.distill import FRePo
from proxynas.testing.distillers import DistillerContract


class TestFRePoContract(DistillerContract):
    distiller = FRePo(iterations=12, width=16, depth=2, pool_size=3, max_online_steps=10, lr_img=0.01)
