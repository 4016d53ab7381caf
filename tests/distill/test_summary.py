"""The Summary record: what a distiller hands to the proxies."""

import math

import pytest
import torch

from proxynas.data.types import ImageData
from proxynas.distill.base import Summary

DATA = ImageData(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ("a", "b"), (0.0,), (1.0,))


def test_a_learned_lr_is_optional_and_kept():
    assert Summary(DATA, "x").learned_lr is None
    assert Summary(DATA, "x", learned_lr=0.02).learned_lr == 0.02


@pytest.mark.parametrize("bad", [0.0, -0.1, math.nan, math.inf])
def test_a_learned_lr_must_be_a_finite_positive_number(bad):
    with pytest.raises(ValueError, match="learned_lr must be a finite number > 0"):
        Summary(DATA, "x", learned_lr=bad)
