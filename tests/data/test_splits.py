"""Shared splitting / normalising helpers of proxynas.data.base."""

import pytest
import torch

from proxynas.data import DATASETS, CIFAR10, Digits, ImageFolder
from proxynas.data.base import channel_stats, check_classes, make_splits, normalize, stratified_split
from proxynas.errors import DataError


def _labelled(counts):
    y = torch.cat([torch.full((n,), k, dtype=torch.int64) for k, n in enumerate(counts)])
    return torch.arange(len(y)), y


def test_registry_holds_the_three_sources():
    assert DATASETS.get("digits") is Digits
    assert DATASETS.get("cifar10") is CIFAR10
    assert DATASETS.get("imagefolder") is ImageFolder
    assert {"digits", "cifar10", "imagefolder"} <= set(DATASETS.names())


def test_stratified_split_holds_out_the_fraction_of_each_class():
    x, y = _labelled([50, 30, 15, 5])
    (xk, yk), (xh, yh) = stratified_split(x, y, 0.2, seed=0)
    assert torch.bincount(yh).tolist() == [10, 6, 3, 1]
    assert torch.bincount(yk).tolist() == [40, 24, 12, 4]
    # a partition: disjoint and complete, labels still attached to their images
    assert sorted(torch.cat([xk, xh]).tolist()) == list(range(100))
    assert torch.equal(y[xk], yk) and torch.equal(y[xh], yh)


def test_stratified_split_keeps_every_class_on_both_sides():
    x, y = _labelled([3, 2, 40])
    (_, yk), (_, yh) = stratified_split(x, y, 0.05, seed=1)  # 0.05 * 3 rounds to 0 -> clipped to 1
    assert set(yk.tolist()) == set(yh.tolist()) == {0, 1, 2}
    (_, yk), (_, yh) = stratified_split(x, y, 0.95, seed=1)  # would hold everything -> clipped to n-1
    assert set(yk.tolist()) == {0, 1, 2}


def test_stratified_split_is_seeded():
    x, y = _labelled([40, 40])
    a = stratified_split(x, y, 0.25, seed=3)[1][0]
    b = stratified_split(x, y, 0.25, seed=3)[1][0]
    c = stratified_split(x, y, 0.25, seed=4)[1][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_rejects_bad_fraction(fraction):
    x, y = _labelled([4, 4])
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        stratified_split(x, y, fraction, seed=0)


def test_channel_stats_uint8_matches_float_path():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.double() / 255
    assert mean == pytest.approx(ref.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(ref.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)
    float_mean, float_std = channel_stats(x.float() / 255, chunk=7)
    assert mean == pytest.approx(float_mean, abs=1e-6) and std == pytest.approx(float_std, abs=1e-6)


def test_channel_stats_constant_channel_gets_unit_std():
    x = torch.zeros(4, 2, 3, 3)
    x[:, 1] = torch.rand(4, 3, 3)
    mean, std = channel_stats(x)
    assert mean[0] == 0.0 and std[0] == 1.0
    assert torch.isfinite(normalize(x, mean, std)).all()


def test_make_splits_normalises_all_splits_with_train_statistics():
    y = torch.tensor([0, 1, 0, 1])
    train = (torch.tensor([0, 0, 255, 255], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2), y)
    test = (torch.full((4, 1, 2, 2), 255, dtype=torch.uint8), y)
    splits = make_splits("toy", train, test, test, ("a", "b"), {"k": 1})
    assert splits.train.mean == pytest.approx((0.5,)) and splits.train.std == pytest.approx((0.5,))
    assert splits.test.mean == splits.train.mean and splits.val.std == splits.train.std
    assert torch.allclose(splits.test.x, torch.ones(4, 1, 2, 2))  # (1 - 0.5) / 0.5, not re-centred
    assert splits.train.x.dtype == torch.float32 and splits.train.y.dtype == torch.int64
    assert splits.classes == ("a", "b") and splits.info == {"k": 1}


def test_check_classes_names_class_split_and_source():
    check_classes(torch.tensor([0, 1, 2]), ("cat", "dog", "eel"), "test")
    with pytest.raises(DataError, match=r"class 'dog' has no images in the test split of /data/x; every class"):
        check_classes(torch.tensor([0, 2, 2]), ("cat", "dog", "eel"), "test", where="/data/x")


def test_sources_validate_val_fraction():
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        Digits(val_fraction=1.0)
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        CIFAR10(val_fraction=0.0)


def test_normalize_leaves_its_input_alone():
    x = torch.rand(2, 1, 3, 3)
    before = x.clone()
    normalize(x, (0.5,), (0.25,))
    assert torch.equal(x, before)
