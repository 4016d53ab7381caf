"""The NB201 network: shapes, gradients, the zero op, and parameter counts vs NB201."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
import torch

from proxynas.errors import ArchError
from proxynas.spaces import NB201Network, NB201Space, parse_arch

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
MIXED = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|",
)


def uniform(op: str) -> str:
    """The arch whose 6 edges are all ``op``."""
    return f"|{op}~0|+|{op}~0|{op}~1|+|{op}~0|{op}~1|{op}~2|"


@pytest.mark.parametrize("arch", [uniform(op) for op in OPS] + list(MIXED))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (3, 32, 32)])
def test_forward_backward(arch, shape):
    torch.manual_seed(0)
    net = NB201Network(parse_arch(arch), channels=4, cells_per_stage=2, in_channels=shape[0], num_classes=5)
    x = torch.randn(2, *shape)
    logits = net(x)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    # the classifier bias always learns, whatever the cell (its weight does not
    # for all-none: in train mode BN maps the constant features to exactly 0)
    assert net.classifier.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [9, 15])
def test_odd_image_sizes(size):
    net = NB201Network(parse_arch(MIXED[0]), channels=4, cells_per_stage=1, in_channels=3, num_classes=2)
    assert net(torch.randn(2, 3, size, size)).shape == (2, 2)


def test_features_feed_the_classifier():
    torch.manual_seed(0)
    net = NB201Network(parse_arch(MIXED[0]), channels=4, cells_per_stage=1, in_channels=3, num_classes=7).eval()
    x = torch.randn(3, 3, 16, 16)
    feats = net.features(x)
    assert feats.shape == (3, 16) == (3, net.feature_dim)
    assert torch.allclose(net.classifier(feats), net(x))


@pytest.mark.parametrize("train", [True, False])
def test_all_none_output_ignores_the_input(train):
    """Every cell of the all-``none`` arch outputs zeros, so stage 1 emits 0.

    The first reduction block then convolves zeros (0) and BatchNorm turns that
    constant into its bias (train mode: zero mean/variance normalise to 0; eval
    mode: a fixed affine map of 0), and everything after sees a constant. So
    the logits are the same for any input; the control arch shows the test
    can fail.
    """
    torch.manual_seed(0)
    x1, x2 = torch.randn(4, 3, 16, 16), 5 * torch.randn(4, 3, 16, 16)
    dead = NB201Network(parse_arch(ALL_NONE), channels=4, cells_per_stage=2, in_channels=3, num_classes=3).train(train)
    assert torch.allclose(dead(x1), dead(x2))
    live = NB201Network(parse_arch(MIXED[0]), channels=4, cells_per_stage=2, in_channels=3, num_classes=3).train(train)
    assert not torch.allclose(live(x1), live(x2))
    # the stem is cut off: gradients reach it but are exactly zero
    dead.zero_grad()
    dead(x1).sum().backward()
    assert dead.stem[0].weight.grad is not None and not dead.stem[0].weight.grad.any()


def test_the_space_builds_the_network_of_the_parsed_cell():
    torch.manual_seed(0)
    a = NB201Space(channels=4, cells_per_stage=1).build(MIXED[1], in_channels=3, num_classes=10, image_size=8)
    torch.manual_seed(0)
    b = NB201Network(parse_arch(MIXED[1]), channels=4, cells_per_stage=1)
    x = torch.randn(2, 3, 8, 8)
    assert a.arch_pairs == b.arch_pairs == parse_arch(MIXED[1])
    assert torch.equal(a.eval()(x), b.eval()(x))
    # parsing is the space's job: a string is refused, pointing at parse_arch
    with pytest.raises(ArchError, match="parse_arch"):
        NB201Network(MIXED[1])


def test_forward_features_are_the_stem_then_each_block():
    torch.manual_seed(0)
    net = NB201Network(parse_arch(MIXED[0]), channels=4, cells_per_stage=2, in_channels=3, num_classes=7).eval()
    x = torch.randn(3, 3, 16, 16)
    feats = net.forward_features(x)
    # stem, 2 cells, reduction, 2 cells, reduction, 2 cells
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 16, 16)] * 3 + [(8, 8, 8)] * 3 + [(16, 4, 4)] * 3
    assert torch.equal(feats[0], net.stem(x))
    assert torch.equal(feats[-1], net.cells(net.stem(x)))
    last = net.forward_before_global_avg_pool(x)
    assert torch.equal(last, net.lastact(feats[-1]))
    assert torch.allclose(last.mean(dim=(2, 3)), net.features(x))


def test_network_rejects_bad_arch_and_settings():
    with pytest.raises(ArchError, match="unknown op"):
        NB201Space().validate(MIXED[0].replace("avg_pool_3x3", "max_pool_3x3"))
    with pytest.raises(ArchError, match="no implementation for op"):
        NB201Network((("max_pool_3x3", 0),) + parse_arch(MIXED[0])[1:])
    with pytest.raises(ArchError, match="cannot form a cell"):
        NB201Network(parse_arch(MIXED[0])[:4])
    with pytest.raises(ArchError, match="edge order"):
        NB201Network((("none", 0), ("none", 1), ("none", 0)))
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        NB201Network(parse_arch(MIXED[0]), channels=0)
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1"):
        NB201Space().build(MIXED[0], in_channels=0, num_classes=10, image_size=32)


# -- parameter counts ---------------------------------------------------------


def hand_count(arch: str, channels: int, cells: int, in_channels: int, num_classes: int) -> int:
    """Parameters from layer shapes (conv weights, BN gamma+beta, linear W+b)."""
    per_op = {"nor_conv_1x1": lambda c: c * c + 2 * c, "nor_conv_3x3": lambda c: 9 * c * c + 2 * c}
    ops = [op for op, _ in parse_arch(arch)]
    total = 9 * in_channels * channels + 2 * channels  # stem conv + BN
    c = channels
    for stage in range(3):
        if stage:
            # conv_a 3x3 s2 + BN, conv_b 3x3 + BN, shortcut 1x1 conv
            total += 9 * c * 2 * c + 4 * c + 9 * (2 * c) ** 2 + 4 * c + c * 2 * c
            c *= 2
        total += cells * sum(per_op.get(op, lambda c: 0)(c) for op in ops)
    return total + 2 * c + c * num_classes + num_classes  # last BN + classifier


@pytest.mark.parametrize("arch", [ALL_CONV3, ALL_NONE, *MIXED])
@pytest.mark.parametrize("config", [(2, 1, 1, 3), (3, 2, 3, 4), (16, 5, 3, 10)])
def test_num_params_matches_hand_count(arch, config):
    channels, cells, in_channels, num_classes = config
    space = NB201Space(channels=channels, cells_per_stage=cells)
    expected = hand_count(arch, channels, cells, in_channels, num_classes)
    got = space.num_params(arch, in_channels=in_channels, num_classes=num_classes, image_size=32)
    net = space.build(arch, in_channels=in_channels, num_classes=num_classes, image_size=32)
    assert got == expected == sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def params_mb(nb201_csv: Path) -> dict[str, float]:
    with gzip.open(nb201_csv, "rt", newline="") as f:
        return {row["arch_str"]: float(row["params_MB"]) for row in csv.DictReader(f)}


@pytest.mark.parametrize(
    "arch",
    [
        ALL_CONV3,
        MIXED[0],  # NB201 index 1
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",  # index 0
        ALL_NONE,
    ],
)
def test_params_match_nb201_table(arch, params_mb):
    """Same layer shapes as NB201 <=> same count at the benchmark's C=16, N=5."""
    got = NB201Space().num_params(arch, in_channels=3, num_classes=10, image_size=32) / 1e6
    assert got == pytest.approx(params_mb[arch], rel=0.02)
    assert got == pytest.approx(params_mb[arch], abs=1e-6)  # measured: exact


def test_hand_count_matches_table_almost_everywhere(params_mb):
    """Across all 15,625 rows (the hand count equals the module count, above).

    ~1.3% of rows differ by 1/3 or 1/2 of one op's parameters -- the table's
    value looks averaged over per-seed records, some of which describe another
    cell; no single network could produce those fractions.
    """
    exact = sum(abs(hand_count(a, 16, 5, 3, 10) / 1e6 - mb) < 1e-6 for a, mb in params_mb.items())
    assert len(params_mb) == 15_625
    assert exact / len(params_mb) > 0.98


# cells with every way an edge can be skipped when training: none edges, a node unused by the
# output (node 1 here feeds only none edges), a node with only none inputs, an all-none cell
LIVE_EDGE_CASES = (
    "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|",
    "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_1x1~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
    ALL_NONE,
    *MIXED,
)


def test_the_live_edge_plan_skips_none_edges_and_unused_nodes():
    from proxynas.spaces.nb201_network import _live_inputs

    # node 1 feeds none edges only: unused; node 2 is fed by node 0 and (none) node 1
    zero = [False, False, True, False, True, False]
    assert _live_inputs(zero, 4) == [None, [(1, 0)], [(3, 0), (5, 2)]]
    assert _live_inputs([True] * 6, 4) == [None, None, []]  # the output node, fed by none edges only


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_cell_network_built_for_training_trains_bit_for_bit_as_the_built_one(channels_last):
    from proxynas.data.types import ImageData
    from proxynas.training import TrainSettings, fit

    space = NB201Space(channels=4, cells_per_stage=2)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 4
    data = ImageData(torch.randn(40, 3, 8, 8, generator=g) + y.view(-1, 1, 1, 1), y, tuple("abcd"), (0.0,) * 3,
                     (1.0,) * 3)
    settings = TrainSettings(epochs=4, batch_size=16, augment="dsa", curve_every=2)
    for arch in LIVE_EDGE_CASES:
        curves = []
        for build in (space.build, space.build_for_training):
            torch.manual_seed(0)
            net = build(arch, in_channels=3, num_classes=4, image_size=8)
            curves.append(fit(net, data, settings, device=torch.device("cpu"), seed=0, eval_data=data,
                              channels_last=channels_last).curve)
        assert curves[0] == curves[1], arch


def test_only_a_network_built_for_training_skips_edges():
    space = NB201Space(channels=4, cells_per_stage=1)
    sizes = {"in_channels": 3, "num_classes": 4, "image_size": 8}
    built, trained = space.build(ALL_NONE, **sizes), space.build_for_training(ALL_NONE, **sizes)
    cells = [m for m in built.modules() if hasattr(m, "live_edges_only")]
    assert cells and not any(c.live_edges_only for c in cells)
    assert all(c.live_edges_only for c in trained.modules() if hasattr(c, "live_edges_only"))
    # zero-cost proxies read every edge: the built network still runs its none edges
    calls = []
    for edge in cells[0].edges:
        edge.register_forward_hook(lambda *args: calls.append(1))
    built(torch.randn(2, 3, 8, 8))
    assert len(calls) == 6
