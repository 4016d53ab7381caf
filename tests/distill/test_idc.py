"""IDC (Kim et al., ICML 2022) against the distiller contract; its own tests are in test_gradient_matching.py."""

from proxynas.distill import IDC
from proxynas.testing.distillers import DistillerContract, SpaceAwareDistillerContract


class TestIDCContract(DistillerContract):
    # lr_img 0.5 (the paper's 5e-3 is for CIFAR-10's 2,000 iterations) so the objective visibly falls within 12
    distiller = IDC(
        iterations=12, match_steps=1, net_steps=1, batch_net=20, batch_real=10, width=16, depth=2, lr_img=0.5
    )


class TestIDCSpaceAwareContract(SpaceAwareDistillerContract):
    # IDC overrides new_network (pretraining) and still gets the space given to distill(); factor 2
    # decodes the budget to ipc * 4 images per class
    distiller = IDC(
        iterations=3, match_steps=2, net_steps=1, batch_net=20, batch_real=10, networks="space", pretrain_epochs=1,
        factor=2,
    )
