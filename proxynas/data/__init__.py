"""Datasets: where images come from and how they are split.

Importing this package registers every built-in source in :data:`DATASETS`
(``digits``, ``cifar10``, ``imagefolder``), so configs can name them.
"""

from proxynas.data.base import DATASETS, DatasetSource
from proxynas.data.cifar10 import CIFAR10
from proxynas.data.digits import Digits
from proxynas.data.imagefolder import ImageFolder
from proxynas.data.types import DatasetSplits, ImageData

__all__ = ["DATASETS", "DatasetSource", "DatasetSplits", "ImageData", "Digits", "CIFAR10", "ImageFolder"]
