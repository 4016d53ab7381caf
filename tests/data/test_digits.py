"""The embedded sklearn digits dataset."""

import pytest
import torch

from proxynas.data import Digits


@pytest.fixture(scope="module")
def splits():
    return Digits().load()


def test_shapes_and_sizes(splits):
    assert splits.name == "digits"
    assert splits.shape == (1, 8, 8)
    assert splits.classes == tuple(str(k) for k in range(10))
    n_train, n_val, n_test = len(splits.train), len(splits.val), len(splits.test)
    assert n_train + n_val + n_test == 1797
    assert n_test == pytest.approx(0.25 * 1797, abs=10)
    assert n_val == pytest.approx(0.1 * (1797 - n_test), abs=10)
    assert splits.train.x.dtype == torch.float32 and splits.train.y.dtype == torch.int64


def test_every_class_in_every_split(splits):
    for part in (splits.train, splits.val, splits.test):
        assert sorted(torch.unique(part.y).tolist()) == list(range(10))


def test_normalised_with_train_statistics(splits):
    x = splits.train.x
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert x.std(dim=(0, 2, 3), unbiased=False) == pytest.approx(torch.ones(1), abs=1e-4)
    for part in (splits.val, splits.test):
        assert part.mean == splits.train.mean and part.std == splits.train.std
    pixels = splits.test.denormalize()
    assert pixels.min() == 0.0 and pixels.max() == pytest.approx(1.0)  # 0..16 scaled to [0, 1]


def test_same_seed_same_split(splits):
    again = Digits().load()
    for a, b in ((splits.train, again.train), (splits.val, again.val), (splits.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_other_seed_other_split(splits):
    other = Digits(seed=1).load()
    assert len(other.test) == len(splits.test)
    assert not torch.equal(other.test.x, splits.test.x)
    assert not torch.equal(other.val.x, splits.val.x)


def test_test_fraction_is_a_setting():
    assert len(Digits(test_fraction=0.5).load().test) == pytest.approx(1797 / 2, abs=10)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        Digits(test_fraction=1.0)
