"""IDC (Kim et al., ICML 2022) against the distiller contract; its own tests are in test_gradient_matching.py."""

from proxynas.distill import IDC
from proxynas.testing.distillers import DistillerContract, SpaceAwareDistillerContract


class TestIDCContract(DistillerContract):
    # lr_img 0.1 (not the paper's 5e-3) so the objective visibly falls within 15 iterations
    distiller = IDC(
        iterations=15, match_steps=1, net_steps=1, batch_net=20, batch_real=20, width=32, depth=2, lr_img=0.1
    )


class TestIDCSpaceAwareContract(SpaceAwareDistillerContract):
    # IDC overrides new_network (pretraining) and still gets the space given to distill()
    distiller = IDC(iterations=3, match_steps=2, net_steps=1, batch_net=20, batch_real=10, networks="space")
