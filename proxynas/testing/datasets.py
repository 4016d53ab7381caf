"""The contract every dataset source meets, as a pytest suite a source's test subclasses.

A source is tested by one subclass naming one fast instance::

    from proxynas.testing.datasets import DatasetContract

    class TestDigitsContract(DatasetContract):
        source = Digits()

A source that reads files names them with :class:`OnDisk`: the files are
written once per subclass into a temporary folder, then the source is built
on it (no test depends on data outside that folder)::

    class TestImageFolderContract(DatasetContract):
        source = OnDisk(ImageFolder, write_image_folder)

The class is not named ``Test...`` so pytest collects only its subclasses. The
splits are loaded once per subclass (a class-scoped fixture: twice with the
source's seed, once with another) and every test reads them.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pytest
import torch

from proxynas.data.base import DATASETS, DatasetSource
from proxynas.data.types import DatasetSplits, ImageData
from proxynas.testing.plugins import assert_registered

__all__ = ["DatasetContract", "Loads", "OnDisk", "write_cifar10_batches", "write_image_folder"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class OnDisk:
    """A source of class ``cls`` reading files that ``write(folder)`` creates; it returns the ``root`` setting."""

    cls: type[DatasetSource]
    write: Callable[[Path], Path]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def build(self, folder: Path) -> DatasetSource:
        return self.cls(root=str(self.write(folder)), **self.settings)


def _pixels(n: int, size: int, rng: np.random.Generator, base: Sequence[int]) -> np.ndarray:
    """``n`` distinct uint8 RGB images ``[n, size, size, 3]``: a class colour plus noise."""
    noise = rng.integers(-40, 41, size=(n, size, size, 3))
    return np.clip(np.asarray(base)[None, None, None, :] + noise, 0, 255).astype(np.uint8)


def write_image_folder(
    folder: Path, classes: Sequence[str] = ("ant", "bee", "cow"), n_train: int = 10, n_test: int = 3, size: int = 8
) -> Path:
    """A tiny ``root/{train,test}/<class>/*.png`` tree of distinct noisy images; returns ``root``."""
    from PIL import Image

    root = folder / "imagefolder"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(classes):
        base = [(60 + 70 * k) % 256, (200 - 50 * k) % 256, (30 + 90 * k) % 256]
        for split, n in (("train", n_train), ("test", n_test)):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i, pixels in enumerate(_pixels(n, size, rng, base)):
                Image.fromarray(pixels, "RGB").save(root / split / cls / f"{i:03d}.png")
    return root


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar10_batches(folder: Path, per_class: int = 2) -> Path:
    """A tiny ``cifar-10-batches-py`` (the official pickle format, 32x32): ``per_class`` images of
    each class in each of the 5 train batches and the test batch; returns the ``root`` holding it."""
    root = folder / "cifar10"
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name: str) -> None:
        labels = [k for k in range(10) for _ in range(per_class)]
        images = np.concatenate([_pixels(per_class, 32, rng, [25 * k, 255 - 25 * k, 128]) for k in range(10)])
        rows = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)  # R plane, G plane, B plane
        with open(batches / name, "wb") as fh:
            pickle.dump({"batch_label": name, "labels": labels, "data": rows, "filenames": []}, fh)

    for i in range(1, 6):
        batch(f"data_batch_{i}")
    batch("test_batch")
    with open(batches / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10 * per_class}, fh)
    return root


@dataclass
class Loads:
    """What the class-scoped fixture loaded once for one source."""

    source: DatasetSource
    splits: DatasetSplits
    again: DatasetSplits  # the same source loaded again
    reseeded: DatasetSplits  # the source with seed + 1


class DatasetContract:
    """Inherited tests for one dataset source; subclasses set :attr:`source`."""

    #: the fast instance under test, or an :class:`OnDisk` that builds it (required)
    source: ClassVar[DatasetSource | OnDisk]

    @classmethod
    def plugin_type(cls) -> type:
        """The registered class this subclass tests."""
        source = cls.source
        return source.cls if isinstance(source, OnDisk) else type(source)

    # -- fixtures ---------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def loads(cls, tmp_path_factory) -> Loads:
        """The splits every test reads, loaded once per subclass."""
        source = getattr(cls, "source", None)
        if isinstance(source, OnDisk):
            source = source.build(tmp_path_factory.mktemp(cls.__name__))
        assert isinstance(source, DatasetSource), f"{cls.__name__} must set `source = <a DatasetSource>`"
        reseeded = dataclasses.replace(source, seed=source.seed + 1)
        return Loads(source, source.load(), source.load(), reseeded.load())

    # -- splits -----------------------------------------------------------------------

    def test_splits_are_named_after_the_source(self, loads):
        assert loads.splits.name == type(loads.source).name

    def test_every_split_has_every_class(self, loads):
        splits = loads.splits
        classes = splits.train.classes
        assert classes and len(set(classes)) == len(classes) and all(isinstance(c, str) for c in classes)
        for name in SPLITS:
            part: ImageData = getattr(splits, name)
            assert part.classes == classes, f"{name} has other classes"
            assert part.y.dtype == torch.int64 and part.y.min() >= 0 and part.y.max() < len(classes)
            counts = torch.bincount(part.y, minlength=len(classes))
            assert counts.min() >= 1, f"{name} lacks class {classes[int(counts.argmin())]!r}"

    def test_images_are_float_and_share_one_shape(self, loads):
        shapes = {getattr(loads.splits, name).shape for name in SPLITS}
        assert len(shapes) == 1, shapes
        for name in SPLITS:
            x = getattr(loads.splits, name).x
            assert x.dtype == torch.float32 and x.ndim == 4 and torch.isfinite(x).all()

    def test_normalised_with_the_train_statistics(self, loads):
        train = loads.splits.train
        mean, std = train.mean, train.std
        assert len(mean) == len(std) == train.shape[0]
        assert all(0.0 <= m <= 1.0 for m in mean) and all(s > 0 for s in std), (mean, std)
        for name in SPLITS:
            part = getattr(loads.splits, name)
            assert (part.mean, part.std) == (mean, std), f"{name} is normalised with other statistics"
        x = train.x.double()
        assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(len(mean), dtype=torch.float64), atol=1e-4)
        spread = x.transpose(0, 1).flatten(1).std(dim=1, unbiased=False)
        assert torch.allclose(spread, torch.ones(len(std), dtype=torch.float64), atol=1e-3)

    def test_validation_is_disjoint_from_train(self, loads):
        train = loads.splits.train.x.flatten(1)
        val = loads.splits.val.x.flatten(1)
        assert len(val) and len(train)
        shared = (torch.cdist(val.double(), train.double()).min(dim=1).values == 0).sum()
        assert shared == 0, f"{int(shared)} validation images are also in train"

    def test_seeded_split_is_reproducible(self, loads):
        for name in SPLITS:
            a, b = getattr(loads.splits, name), getattr(loads.again, name)
            assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y), f"{name} changed between two loads"

    def test_another_seed_picks_another_validation_split(self, loads):
        assert not torch.equal(loads.splits.val.x, loads.reseeded.val.x)

    # -- identity ---------------------------------------------------------------------

    def test_registered_and_rebuilt_from_its_config(self, loads):
        assert_registered(loads.source, DATASETS, DatasetSource)
