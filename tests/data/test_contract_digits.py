"""sklearn digits against the dataset contract; its own tests are in test_digits.py."""

from proxynas.data import Digits
from proxynas.testing.datasets import DatasetContract


class TestDigitsContract(DatasetContract):
    source = Digits()
