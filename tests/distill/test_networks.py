"""Matching networks: the fixed ConvNet or random cells of the search space being ranked."""

import pytest
import torch
from torch import nn

from proxynas.distill import DC, DCC, DISTILLERS, DM, IDC
from proxynas.distill.base import seeded_convnet
from proxynas.distill.networks import draw_network, freeze_batchnorm, has_batchnorm, require_space
from proxynas.errors import ConfigError
from proxynas.spaces import ConvNetSpace, NB201Space
from proxynas.testing.distillers import tiny_images

CPU = torch.device("cpu")
SPACE = NB201Space(channels=4, cells_per_stage=1, skip_disconnected=True)
PAPERS_CONVNET = "depth=2|width=32|act=relu|norm=instancenorm|pool=avgpool"


class OneArch(ConvNetSpace):
    """The ConvNet space, but every draw is ``PAPERS_CONVNET`` (the fixed ConvNet of the papers)."""

    def sample(self, n, seed):
        return [PAPERS_CONVNET] * n


def test_convnet_draw_is_the_seeded_convnet():
    data = tiny_images()
    drawn = draw_network(data, 5, CPU, width=16, depth=2)
    reference = seeded_convnet(data, 5, CPU, width=16, depth=2)
    assert drawn.arch is None
    assert all(torch.equal(a, b) for a, b in zip(drawn.module.state_dict().values(), reference.state_dict().values()))
    assert torch.equal(drawn.embed(data.x[:4]), reference.embed(data.x[:4]))


def test_space_draw_of_the_papers_convnet_has_the_convnet_weights():
    # both initialise the same module under torch.manual_seed(seed): the space path only changes the arch
    data = tiny_images()
    drawn = draw_network(data, 5, CPU, space=OneArch())
    reference = seeded_convnet(data, 5, CPU, width=32, depth=2)
    assert drawn.arch == PAPERS_CONVNET
    assert all(torch.equal(a, b) for a, b in zip(drawn.module.state_dict().values(), reference.state_dict().values()))


def test_space_draw_is_fixed_by_the_seed_and_varies_with_it():
    data = tiny_images()
    a, b = draw_network(data, 7, CPU, space=SPACE), draw_network(data, 7, CPU, space=SPACE)
    assert a.arch == b.arch and SPACE.validate(a.arch) == a.arch
    assert all(torch.equal(x, y) for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values()))
    archs = {draw_network(data, seed, CPU, space=SPACE).arch for seed in range(8)}
    assert len(archs) > 1


def test_space_draw_is_a_frozen_batchnorm_net_in_train_mode_with_pooled_embedding():
    data = tiny_images()
    rng = torch.random.get_rng_state()
    drawn = draw_network(data, 3, CPU, space=SPACE)
    assert torch.equal(torch.random.get_rng_state(), rng), "drawing must not touch the global RNG"
    net = drawn.module
    assert has_batchnorm(net) and net.training
    assert all(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())
    x = data.x[:5]
    feats = drawn.embed(x)
    assert feats.shape == (5, 4 * SPACE.channels)
    assert torch.allclose(feats, net.forward_before_global_avg_pool(x).mean(dim=(2, 3)))


def test_papers_convnet_has_no_batchnorm():
    assert not has_batchnorm(seeded_convnet(tiny_images(), 0, CPU, width=16, depth=2))


def test_freeze_batchnorm_fixes_statistics_of_the_batch_and_evals_only_batchnorm():
    data = tiny_images()
    net = draw_network(data, 3, CPU, space=SPACE).module
    stem_bn = net.stem[1]
    momentum = stem_bn.momentum
    freeze_batchnorm(net, data.x)
    with torch.no_grad():
        pre = net.stem[0](data.x)
    assert torch.allclose(stem_bn.running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(stem_bn.running_var, pre.var(dim=(0, 2, 3)), rtol=1e-4)
    assert stem_bn.momentum == momentum
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert net.training and net.classifier.training
    # the statistics are now fixed: one image's output no longer depends on its batch
    with torch.no_grad():
        assert torch.allclose(net(data.x[:1]), net(data.x[:6])[:1], atol=1e-5)


def test_require_space_is_a_one_line_error_naming_the_setting():
    require_space("dm", "convnet", None)
    require_space("dm", "space", SPACE)
    with pytest.raises(ConfigError, match=r"distill\.methods\.dm\.networks=space needs the search space") as err:
        require_space("dm", "space", None)
    assert "\n" not in str(err.value)


def test_needs_space_only_with_networks_space():
    for name in DISTILLERS.names():
        assert DISTILLERS.get(name)().needs_space is False, name
    for cls in (DM, DC, DCC, IDC):
        assert cls(networks="space").needs_space is True
        assert cls(networks="convnet").needs_space is False


def test_unknown_networks_rejected():
    with pytest.raises(ValueError, match="convnet, space"):
        DM(networks="resnet")
    with pytest.raises(ValueError, match="convnet, space"):
        DC(networks="resnet")
