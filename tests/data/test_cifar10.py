"""CIFAR-10 from a tiny fake cifar-10-batches-py in the official pickle format."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from proxynas.data import CIFAR10
from proxynas.errors import DataError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_CLASS = 2  # images of each class in each batch file


def _batch(start_label: int) -> dict:
    """Rows of 3072 bytes (R plane, G plane, B plane; each 32x32 row-major)."""
    labels = [k for k in range(10) for _ in range(PER_CLASS)]
    labels = labels[start_label:] + labels[:start_label]
    rows = np.zeros((len(labels), 3, 32, 32), dtype=np.uint8)
    for i, k in enumerate(labels):
        rows[i, 0] = 10 * k
        rows[i, 0, 16:] += 1  # bottom half of the red plane differs: checks H/W orientation
        rows[i, 1] = 100 + k
        rows[i, 2] = 250 - k
    return {"batch_label": "fake", "labels": labels, "data": rows.reshape(len(labels), -1), "filenames": []}


def make_fake_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(_batch(i), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_batch(0), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": NAMES, "num_cases_per_batch": 10 * PER_CLASS, "num_vis": 3072}, f)
    return root


def test_loads_fake_cifar(tmp_path):
    root = make_fake_cifar(tmp_path / "c10")
    splits = CIFAR10(root=str(root), val_fraction=0.2).load()
    assert splits.name == "cifar10"
    assert splits.classes == tuple(NAMES)
    assert splits.shape == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 20, 20)
    for part in (splits.train, splits.val, splits.test):
        assert torch.bincount(part.y, minlength=10).tolist() == [len(part) // 10] * 10
        pixels = (part.denormalize() * 255).round().to(torch.int64)
        k = part.y
        assert torch.equal(pixels[:, 0, 0, 5], 10 * k)  # red plane, top row
        assert torch.equal(pixels[:, 0, 31, 5], 10 * k + 1)  # red plane, bottom row
        assert torch.equal(pixels[:, 1, 7, 7], 100 + k)
        assert torch.equal(pixels[:, 2, 7, 7], 250 - k)
    assert splits.train.x.mean(dim=(0, 2, 3)).abs().max() < 1e-5


def test_missing_root_names_path_and_fix(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=f"{missing}/cifar-10-batches-py does not exist; set data.root .*download=true"):
        CIFAR10(root=str(missing)).load()


def test_missing_batch_file(tmp_path):
    root = make_fake_cifar(tmp_path / "c10")
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="cannot read CIFAR-10"):
        CIFAR10(root=str(root)).load()


def test_corrupt_batch_file(tmp_path):
    root = make_fake_cifar(tmp_path / "c10")
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read CIFAR-10 from .*cifar-10-batches-py"):
        CIFAR10(root=str(root)).load()
