"""DC and DSA (Zhao et al., ICLR 2021; Zhao & Bilen, ICML 2021) against the distiller contract.

The methods' own tests are in test_gradient_matching.py (shared with DCC and IDC);
here, matching through networks drawn from the search space (``networks: space``).
"""

import torch
from torch import nn

from proxynas.distill import DC, DCC
from proxynas.distill.dc import DSAMatching
from proxynas.spaces import ConvNetSpace
from proxynas.testing.distillers import (
    DistillerContract,
    SpaceAwareDistillerContract,
    recording_space,
    tiny_images,
)

CPU = torch.device("cpu")
# depth 2 keeps a 2x2 map on 8x8 images; one match step and one net epoch per network
FAST = {"iterations": 12, "match_steps": 1, "net_epochs": 1, "batch_real": 10, "width": 16, "depth": 2}
SPACE_DC = {"iterations": 6, "match_steps": 2, "net_epochs": 1, "batch_real": 10, "networks": "space", "dsa": "none"}


class TestDCContract(DistillerContract):
    distiller = DC(**FAST)


class TestDSAContract(DistillerContract):
    distiller = DSAMatching(**FAST)


def batchnorm_modes(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_search_space_aware_gradient_matching_draws_one_fresh_cell_per_iteration():
    space, built = recording_space(SpaceAwareDistillerContract.space)
    summary = DC(**SPACE_DC).distill(tiny_images(), 2, seed=0, device=CPU, space=space)
    assert len(built) == 6 and len(summary.history) == 6


def test_batchnorm_is_frozen_while_matching_and_trains_between_matching_steps():
    seen = {"match": [], "update": []}

    class Spy(DC):
        def matching_loss(self, net, real, syn):
            seen["match"].append((net.training, batchnorm_modes(net)))
            return super().matching_loss(net, real, syn)

        def update_network(self, net, *args):
            seen["update"].append((net.training, batchnorm_modes(net)))
            return super().update_network(net, *args)

    space, _ = recording_space(SpaceAwareDistillerContract.space)
    Spy(**SPACE_DC).distill(tiny_images(), 2, seed=0, device=CPU, space=space)
    assert len(seen["match"]) == 12 and len(seen["update"]) == 6  # 2 matching steps, 1 update between
    for net_training, bn in seen["match"]:
        assert net_training and bn and not any(bn), "BN layers must be in eval mode while gradients are matched"
    for net_training, bn in seen["update"]:
        assert net_training and all(bn), "the network trains normally between matching steps"


class OneBatchNormConvNet(ConvNetSpace):
    """Every draw is the papers' ConvNet (depth 2) with batch norm instead of instance norm."""

    def sample(self, n, seed):
        return ["depth=2|width=32|act=relu|norm=batchnorm|pool=avgpool"] * n


def test_matching_through_frozen_batchnorm_lowers_the_objective():
    # one arch, so successive iterations' objectives are comparable (NB201 cells' are not)
    dc = DC(**{**SPACE_DC, "iterations": 20}, init="noise", lr_img=1.0)
    history = dc.distill(tiny_images(), 2, seed=0, device=CPU, space=OneBatchNormConvNet()).history
    assert sum(history[-5:]) < 0.6 * sum(history[:5])


class TestDCSpaceAwareContract(SpaceAwareDistillerContract):
    distiller = DC(**SPACE_DC)


class TestDCCSpaceAwareContract(SpaceAwareDistillerContract):
    distiller = DCC(**SPACE_DC)
