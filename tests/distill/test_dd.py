"""DD (Wang et al. 2018) against the distiller contract; its own tests are in test_meta_matching.py."""

from proxynas.distill import DD
from proxynas.testing.distillers import DistillerContract


class TestDDContract(DistillerContract):
    # the project's small ConvNet instead of AlexCifarNet keeps the unrolled second-order loop fast
    distiller = DD(iterations=12, distill_epochs=1, network="convnet", width=16, depth=2, lr_img=0.1, lr_inner=0.1)
