"""CIFAR-10 from torchvision's ``cifar-10-batches-py`` pickles.

The official 50k train / 10k test split is kept as is (test stays the test
set NAS-Bench-201 reports on); validation is carved out of train.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from proxynas.data.base import DATASETS, DatasetSource, check_classes, make_splits, stratified_split
from proxynas.data.types import DatasetSplits
from proxynas.errors import DataError

__all__ = ["CIFAR10"]

_FOLDER = "cifar-10-batches-py"
_FIX = "set data.root to a folder holding cifar-10-batches-py, or data.download=true when online"


def _torchvision_cifar10():
    """torchvision's CIFAR10 reader, checking that files exist rather than their md5.

    torchvision hashes all ~180 MB on every load and rejects any file whose md5
    differs from the official one. Presence is checked here instead: a damaged
    pickle still fails to unpickle (reported as a DataError), loading is faster,
    and a small file in the official format (as in the tests) can be read. The
    downloaded archive itself is still md5-checked by torchvision.
    """
    from torchvision.datasets import CIFAR10 as _Base

    class _PresenceChecked(_Base):
        train_list = [[name, None] for name, _ in _Base.train_list]
        test_list = [[name, None] for name, _ in _Base.test_list]
        meta = {**_Base.meta, "md5": None}

    return _PresenceChecked


@DATASETS.register("cifar10")
@dataclass(frozen=True)
class CIFAR10(DatasetSource):
    """CIFAR-10 (3x32x32, 10 classes) read from ``root/cifar-10-batches-py``.

    ``download`` lets torchvision fetch the archive into ``root`` when it is
    missing; it is off by default so an offline run fails fast with a clear
    message instead of hanging on the network.
    """

    name: ClassVar[str] = "cifar10"

    root: str = "data/cifar10"
    download: bool = False

    def load(self) -> DatasetSplits:
        root = Path(self.root).expanduser()
        folder = root / _FOLDER
        if not self.download and not folder.is_dir():
            raise DataError(f"CIFAR-10 not found: {folder} does not exist; {_FIX}")
        reader = _torchvision_cifar10()
        try:
            train_set = reader(str(root), train=True, download=self.download)
            test_set = reader(str(root), train=False, download=False)
        except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            raise DataError(f"cannot read CIFAR-10 from {folder} ({exc}); {_FIX}") from None

        classes = tuple(train_set.classes)
        x_all, y_all = self._tensors(train_set)
        test = self._tensors(test_set)
        for split_name, (_, labels) in (("train", (x_all, y_all)), ("test", test)):
            check_classes(labels, classes, split_name, where=str(folder), fix=_FIX)
        train, val = stratified_split(x_all, y_all, self.val_fraction, self.seed)
        info = {"source": str(folder), "seed": self.seed}
        return make_splits(self.name, train, val, test, classes, info)

    @staticmethod
    def _tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as uint8 ``[N, 3, H, W]`` and int64 labels, straight from ``.data``.

        Going through ``.data`` avoids building 60k PIL images one by one.
        """
        x = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        y = torch.as_tensor(dataset.targets, dtype=torch.int64)
        return x, y
