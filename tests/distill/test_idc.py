"""IDC (Kim et al., ICML 2022) against the distiller contract; its own tests are in test_gradient_matching.py."""

import torch

from proxynas.distill import IDC
from proxynas.spaces import NB201Space
from proxynas.testing.distillers import DistillerContract, tiny_images


class TestIDCContract(DistillerContract):
    # lr_img 0.1 (not the paper's 5e-3) so the objective visibly falls within 15 iterations
    distiller = IDC(
        iterations=15, match_steps=1, net_steps=1, batch_net=20, batch_real=20, width=32, depth=2, lr_img=0.1
    )


def test_idc_draws_its_pretrained_networks_from_the_search_space():
    # IDC overrides new_network (pretraining) and still gets the space given to distill()
    built = []

    class Spy(NB201Space):
        def build(self, arch, **sizes):
            built.append(arch)
            return super().build(arch, **sizes)

    space = Spy(channels=4, cells_per_stage=1, skip_disconnected=True)
    idc = IDC(iterations=3, match_steps=2, net_steps=1, batch_net=20, batch_real=10, networks="space")
    summary = idc.distill(tiny_images(), 2, seed=0, device=torch.device("cpu"), space=space)
    assert len(built) == 3 and len(set(built)) > 1
    assert torch.isfinite(summary.data.x).all() and len(summary.history) == 3
