"""Datasets: where images come from and how they are split.

Importing this package registers every source in :data:`DATASETS`: each
module of the package is imported (:func:`proxynas.registry.discover`), so a
new source is one module dropped in here, listed nowhere. The built-in ones
(``digits``, ``cifar10``, ``imagefolder``) are also re-exported by name.

:mod:`proxynas.data.zca` is no source: it whitens the splits of any source
(the pipeline's ``zca:`` section).
"""

from proxynas.data.base import DATASETS, DatasetSource
from proxynas.data.cifar10 import CIFAR10
from proxynas.data.digits import Digits
from proxynas.data.imagefolder import ImageFolder
from proxynas.data.types import DatasetSplits, ImageData
from proxynas.data.zca import ZCA, ZCAWhitening, whiten_splits
from proxynas.registry import discover

discover(__name__)

__all__ = [
    "DATASETS",
    "DatasetSource",
    "DatasetSplits",
    "ImageData",
    "Digits",
    "CIFAR10",
    "ImageFolder",
    "ZCA",
    "ZCAWhitening",
    "whiten_splits",
]
