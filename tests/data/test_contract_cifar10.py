"""CIFAR-10 on a tiny generated cifar-10-batches-py against the dataset contract.

Its own tests are in test_cifar10.py.
"""

from proxynas.data import CIFAR10
from proxynas.testing.datasets import DatasetContract, OnDisk, write_cifar10_batches


class TestCIFAR10Contract(DatasetContract):
    source = OnDisk(CIFAR10, write_cifar10_batches)
