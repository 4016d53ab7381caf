"""Herding (Welling 2009; iCaRL Alg. 4) and k-center (Sener & Savarese 2018, Alg. 1) beat random."""

import pytest
import torch

from proxynas.data.types import ImageData
from proxynas.distill import Herding, KCenter, RandomCoreset

CPU = torch.device("cpu")


def tiny(per_class=40, seed=0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(3, 1, 8, 8, generator=g)
    y = torch.arange(3).repeat_interleave(per_class)
    x = centres[y] + 0.5 * torch.randn(len(y), 1, 8, 8, generator=g)
    return ImageData(x, y, ("a", "b", "c"), (0.5,), (0.25,))


def cloud(n=200, d=16, seed=0) -> torch.Tensor:
    """A skewed feature cloud (a few heavy directions) where the choice of points matters."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * torch.linspace(3.0, 0.2, d)


def random_subsets(n, k, count=20):
    g = torch.Generator().manual_seed(123)
    return [torch.randperm(n, generator=g)[:k] for _ in range(count)]


def mean_gap(feats, idx):
    return float((feats[idx].mean(0) - feats.mean(0)).norm())


def covering_radius(feats, idx):
    return float(torch.cdist(feats, feats[idx]).min(dim=1).values.max())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 5, 10])
def test_herding_mean_closer_than_random(seed, k):
    feats = cloud(seed=seed)
    chosen = Herding().select(feats, k, torch.Generator().manual_seed(0))
    assert len(set(chosen.tolist())) == k
    gaps = [mean_gap(feats, idx) for idx in random_subsets(len(feats), k)]
    assert mean_gap(feats, chosen) < min(gaps)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("d", [2, 4, 16])
@pytest.mark.parametrize("k", [5, 10])
def test_kcenter_covering_radius_at_most_random(seed, d, k):
    feats = cloud(d=d, seed=seed)
    chosen = KCenter().select(feats, k, torch.Generator().manual_seed(seed))
    assert len(set(chosen.tolist())) == k
    radii = [covering_radius(feats, idx) for idx in random_subsets(len(feats), k)]
    radius = covering_radius(feats, chosen)
    assert radius <= sum(radii) / len(radii)  # better than a random subset on average
    assert radius <= 2 * min(radii)  # the greedy 2-approximation (Sener & Savarese 2018)


def test_kcenter_never_repeats_duplicate_points():
    feats = torch.zeros(6, 3)  # all points identical: every distance is 0
    chosen = KCenter().select(feats, 4, torch.Generator().manual_seed(0))
    assert len(set(chosen.tolist())) == 4


@pytest.mark.parametrize("features", ["convnet", "pixels"])
def test_herding_end_to_end_beats_random_in_its_feature_space(features):
    data = tiny()
    herding = Herding(features=features, width=32)
    feats = herding.features_of(data, seed=0, device=CPU)
    picked = herding.features_of(herding.distill(data, 3, seed=0, device=CPU).data, seed=0, device=CPU)
    rand = herding.features_of(RandomCoreset().distill(data, 3, seed=0, device=CPU).data, seed=0, device=CPU)
    for k in range(3):
        mu = feats[data.y == k].mean(0)
        assert (picked[3 * k : 3 * k + 3].mean(0) - mu).norm() < (rand[3 * k : 3 * k + 3].mean(0) - mu).norm()


@pytest.mark.parametrize("name,cls", [("random", RandomCoreset), ("herding", Herding), ("kcenter", KCenter)])
def test_coresets_return_real_images_of_the_right_class(name, cls):
    data = tiny()
    out = cls().distill(data, 4, seed=0, device=CPU).data
    for image, label in zip(out.x, out.y):
        matches = (data.x == image).flatten(1).all(dim=1)
        assert matches.any() and (data.y[matches] == label).all()
    assert len(torch.unique(out.x, dim=0)) == len(out.x)  # no image picked twice


def test_feature_batch_does_not_change_features():
    data = tiny()
    whole = Herding(feature_batch=1000, width=16).features_of(data, seed=3, device=CPU)
    chunked = Herding(feature_batch=7, width=16).features_of(data, seed=3, device=CPU)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_convnet_features_depend_on_seed_pixels_do_not():
    data = tiny()
    assert not torch.allclose(Herding().features_of(data, seed=0, device=CPU), Herding().features_of(data, seed=1, device=CPU))
    assert Herding(features="pixels").seeded is False and Herding().seeded is True
    a = Herding(features="pixels").distill(data, 3, seed=0, device=CPU).data.x
    b = Herding(features="pixels").distill(data, 3, seed=9, device=CPU).data.x
    assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [Herding, KCenter])
def test_bad_settings_rejected(cls):
    with pytest.raises(ValueError, match="convnet, pixels"):
        cls(features="resnet")
    with pytest.raises(ValueError, match="feature_batch must be an integer > 0, got 0"):
        cls(feature_batch=0)
