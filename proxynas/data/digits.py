"""scikit-learn's 8x8 handwritten digits: the dataset that is always there.

It ships inside scikit-learn (1,797 images, no download, loads in
milliseconds), so the default pipeline, the tests and the examples run
anywhere. Ranking on it is a smoke test, not a benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from proxynas.data.base import DATASETS, DatasetSource, check_classes, make_splits, stratified_split
from proxynas.data.types import DatasetSplits
from proxynas.fields import checked

__all__ = ["Digits"]

_MAX_VALUE = 16.0  # load_digits pixels are counts 0..16


@DATASETS.register("digits")
@dataclass(frozen=True)
class Digits(DatasetSource):
    """1x8x8 grayscale digits ``"0"``..``"9"`` with seeded stratified splits.

    The data has no official test split, so ``test_fraction`` of each class is
    held out first and ``val_fraction`` of the rest becomes validation; both use
    ``seed``.
    """

    name: ClassVar[str] = "digits"

    test_fraction: float = checked(0.25, gt=0, lt=1)

    def load(self) -> DatasetSplits:
        from sklearn.datasets import load_digits  # sklearn is slow to import; only pay when used

        bunch = load_digits()
        x = torch.as_tensor(bunch.images, dtype=torch.float32).div_(_MAX_VALUE).unsqueeze(1)
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
        classes = tuple(str(k) for k in range(10))

        pool, test = stratified_split(x, y, self.test_fraction, self.seed)
        train, val = stratified_split(*pool, self.val_fraction, self.seed + 1)
        for split_name, (_, labels) in (("train", train), ("val", val), ("test", test)):
            check_classes(labels, classes, split_name, where="sklearn digits", fix="lower the split fractions")
        info = {"source": "sklearn.datasets.load_digits", "seed": self.seed}
        return make_splits(self.name, train, val, test, classes, info)
