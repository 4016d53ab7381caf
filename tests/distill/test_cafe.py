"""CAFE (Wang et al., CVPR 2022): its two losses, the features it aligns, its dynamic loops, the contract."""

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from proxynas.augment import DEFAULT_STRATEGY
from proxynas.data.types import ImageData
from proxynas.distill.base import initial_images, seeded_convnet
from proxynas.distill.cafe import (
    CAFE,
    AccuracyWatch,
    aligned_features,
    class_means,
    discrimination_loss,
    feature_alignment,
)
from proxynas.errors import DivergenceError
from proxynas.testing.distillers import DistillerContract, tiny_images

CPU = torch.device("cpu")
# depth 2 keeps a 2x2 map on 8x8 images; one weight per block activation and the output map
SMALL = {"width": 16, "depth": 2, "layer_weights": (0.1, 1.0, 2.0), "query_per_class": 20}
# both dynamic loops capped at two steps, so an iteration is a handful of tiny forward passes
FAST_LOOPS = {"window": 2, "max_match_steps": 2, "max_net_epochs": 2}


class TestCAFEContract(DistillerContract):
    # CAFE+DSA: exercises the siamese and the per-image augmentation draws through a resume
    distiller = CAFE(
        iterations=12, width=8, depth=2, layer_weights=(0.1, 1.0, 2.0), query_per_class=10,
        window=2, max_match_steps=2, max_net_epochs=1, dsa=DEFAULT_STRATEGY,
    )


# ------------------------------------------------------------------ the two losses, by hand
def test_feature_alignment_is_the_weighted_squared_distance_of_class_means():
    real = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[[0.5]], [[-1.0]]])]
    syn = [torch.tensor([[0.0, 2.0], [3.0, 6.0]]), torch.tensor([[[1.5]], [[1.0]]])]
    # layer 0: (1-0)^2 + 0 + 0 + (4-6)^2 = 5; layer 1: (0.5-1.5)^2 + (-1-1)^2 = 5
    assert float(feature_alignment(real, syn, (0.5, 3.0))) == pytest.approx(0.5 * 5 + 3.0 * 5)
    assert float(feature_alignment(real, real, (0.5, 3.0))) == 0.0
    with pytest.raises(ValueError, match="2 real and 2 synthetic layers for 1 weights"):
        feature_alignment(real, syn, (1.0,))


def test_class_means_average_each_class_rows():
    feats = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [-1.0, 4.0], [0.0, 0.0], [2.0, -4.0]])
    assert torch.equal(class_means(feats, [2, 1, 3]), torch.tensor([[2.0, 1.0], [5.0, 5.0], [1 / 3, 0.0]]))


def test_discrimination_loss_is_the_summed_cross_entropy_of_inner_products_with_the_centres():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    centres = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    # logits: [2, 0], [0, 1], [2, 1]; -log softmax at the label
    expected = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))
    assert float(discrimination_loss(real, labels, centres)) == pytest.approx(expected)


def test_accuracy_watch_keeps_the_released_running_value_and_its_spread():
    watch = AccuracyWatch(window=3, num_classes=2)
    # value = (previous + sum of class accuracies) / classes, never reset
    assert watch.read([1.0, 0.0]) == 0.5 and watch.spread() is None
    assert watch.read([1.0, 1.0]) == 1.25 and watch.spread() is None
    assert watch.read([0.0, 0.0]) == 0.625
    assert watch.spread() == pytest.approx(1.25 - 0.5)
    watch.read([0.0, 0.0])  # 0.3125: the oldest reading (0.5) leaves the window
    assert watch.spread() == pytest.approx(1.25 - 0.3125)


# ----------------------------------------------------------------- the features and the objective
def test_aligned_features_are_each_block_activation_before_its_pool_then_the_output_map():
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    data = ImageData(x, torch.tensor([0, 1, 0, 1]), ("a", "b"), (0.5,), (0.25,))
    net = seeded_convnet(data, 0, CPU, width=8, depth=3)
    feats = aligned_features(net, x)
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 32, 32), (8, 16, 16), (8, 8, 8), (8, 4, 4)]
    blocks = net.forward_features(x)  # the pooled outputs of the blocks
    for activation, pooled in zip(feats[:3], blocks[1:]):
        assert (activation >= 0).all()  # after the ReLU
        assert torch.allclose(F.avg_pool2d(activation, 2), pooled)
    assert torch.equal(feats[-1].flatten(1), net.embed(x))


def test_objective_is_the_two_losses_of_the_network_features():
    data = tiny_images()
    cafe = CAFE(**SMALL)
    net = seeded_convnet(data, 0, CPU, width=16, depth=2)
    real = [data.x[data.y == k][:5] for k in range(3)]
    syn = [r[:2] + 0.3 for r in real]
    align, disc = cafe.objective(net, real, syn)
    real_feats = [aligned_features(net, torch.cat(real)), aligned_features(net, torch.cat(syn))]
    means = [[class_means(f, sizes) for f in feats] for feats, sizes in zip(real_feats, ([5] * 3, [2] * 3))]
    assert float(align) == pytest.approx(float(feature_alignment(means[0], means[1], cafe.layer_weights)))
    labels = torch.arange(3).repeat_interleave(5)
    expected = discrimination_loss(net.embed(torch.cat(real)), labels, means[1][-1].flatten(1))
    assert float(disc) == pytest.approx(float(expected))
    same_align, _ = cafe.objective(net, real, real)
    assert float(same_align) == 0.0


def test_distillation_lowers_both_terms_on_networks_it_never_saw():
    data, ipc = tiny_images(), 2
    cafe = CAFE(iterations=20, **SMALL, **FAST_LOOPS)
    start = initial_images(data, ipc, cafe.init, torch.Generator().manual_seed(0), CPU)
    out = cafe.distill(data, ipc, seed=0, device=CPU).data.x
    real = [data.x[data.y == k] for k in range(3)]

    def terms(syn):
        """(L_f, L_d) averaged over ten random networks (seeds the run never draws)."""
        pairs = [cafe.objective(seeded_convnet(data, s, CPU, width=16, depth=2), real, list(syn.split(ipc)))
                 for s in range(10_000, 10_010)]
        return sum(float(a) for a, _ in pairs) / 10, sum(float(d) for _, d in pairs) / 10

    (align_before, disc_before), (align_after, disc_after) = terms(start), terms(out)
    assert align_after < 0.2 * align_before
    assert disc_after < 0.5 * disc_before
    # from noise every real image is near-uniformly scored: L_d starts near N log K
    assert disc_before == pytest.approx(60 * math.log(3), rel=0.3)


# ------------------------------------------------------------------------ the dynamic loops
@dataclass(frozen=True)
class CountingCAFE(CAFE):
    """CAFE counting its image updates and its network epochs (in :attr:`counts`)."""

    counts: ClassVar[dict[str, int]] = {}

    def objective(self, net, real, syn):
        self.counts["updates"] = self.counts.get("updates", 0) + 1
        return super().objective(net, real, syn)

    def train_epoch(self, *args):
        self.counts["epochs"] = self.counts.get("epochs", 0) + 1
        return super().train_epoch(*args)


@pytest.mark.parametrize(
    "loops,updates,epochs",
    [
        # spreads are at most K/(K-1) = 1.5: the outer loop settles as soon as it has 3 readings,
        # after 3 updates and 2 one-epoch network updates
        ({"window": 3, "outer_spread": 2.0, "max_net_epochs": 1}, 3, 2),
        # never settles (a spread is never < 0): capped at 4 updates, the network trained between them
        ({"window": 3, "outer_spread": 0.0, "max_match_steps": 4, "max_net_epochs": 1}, 4, 3),
        # the network's accuracy never moves by more than 2: each network update runs to its cap
        ({"window": 2, "outer_spread": 0.0, "inner_spread": 2.0, "max_match_steps": 2, "max_net_epochs": 5}, 2, 5),
    ],
)
def test_the_watches_size_the_outer_and_inner_loops(loops, updates, epochs):
    CountingCAFE.counts.clear()
    CountingCAFE(iterations=2, **SMALL, **loops).distill(tiny_images(), 2, seed=0, device=CPU)
    assert CountingCAFE.counts == {"updates": 2 * updates, "epochs": 2 * epochs}


# ------------------------------------------------------------------------------- settings
def test_image_learning_rate_halves_at_the_released_iterations():
    cafe = CAFE()  # released adjust_learning_rate: x0.5 from 0-based iterations 1200, 1600, 1800 of 2000
    assert [cafe.lr_at(it) for it in (1, 1200, 1201, 1600, 1601, 1800, 1801, 2000)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125]
    )


def test_released_defaults():
    cafe = CAFE()
    assert (cafe.iterations, cafe.lr_img, cafe.momentum_img, cafe.lr_net) == (2000, 0.1, 0.5, 0.01)
    assert (cafe.beta, cafe.outer_spread, cafe.inner_spread, cafe.window) == (0.01, 0.04, 0.03, 10)
    assert cafe.layer_weights == (0.1, 0.1, 1.0, 2.0) and cafe.init == "noise" and cafe.dsa == "none"
    assert CAFE.paper("cifar10", 10) == cafe


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"depth": 2}, r"layer_weights needs depth \+ 1 = 3 values"),
        ({"layer_weights": (0.1, -1.0, 1.0, 1.0)}, "layer_weights must be a non-empty list of numbers >= 0"),
        ({"lr_halved_at": (0.5, 1.5)}, r"lr_halved_at must hold fractions of iterations in \(0, 1\]"),
        ({"window": 0}, "window must be an integer > 0"),
        ({"max_net_epochs": 0}, "max_net_epochs must be an integer > 0 or null"),
        ({"dsa": "color_blur"}, "color, crop, cutout, flip, scale, rotate"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        CAFE(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "setting,match",
    [
        ("lr_img", r"cafe: objective became nan at iteration 1; lower distill\.methods\.cafe\.lr_img"),
        ("lr_net", r"cafe: network training loss became nan at iteration 1; lower distill\.methods\.cafe\.lr_net"),
    ],
)
def test_nan_learning_rates_raise_divergence_naming_the_setting(setting, match):
    cafe = CAFE(iterations=3, **{setting: float("nan")}, **SMALL, **FAST_LOOPS)
    with pytest.raises(DivergenceError, match=match):
        cafe.distill(tiny_images(), 2, seed=0, device=CPU)


def test_cafe_with_dsa_is_evaluated_as_the_paper_evaluated_cafe_dsa():
    assert CAFE().evaluation_protocol() == CAFE.paper_protocol
    with_dsa = CAFE(dsa="color_crop_cutout_flip_scale_rotate").evaluation_protocol()
    assert (with_dsa.epochs, with_dsa.augment) == (1000, "dsa")
    assert (CAFE.paper_protocol.epochs, CAFE.paper_protocol.augment) == (600, "none")
