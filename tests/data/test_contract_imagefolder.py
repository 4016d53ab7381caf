"""ImageFolder on a tiny generated tree against the dataset contract; its own tests are in test_imagefolder.py."""

from proxynas.data import ImageFolder
from proxynas.testing.datasets import DatasetContract, OnDisk, write_image_folder


class TestImageFolderContract(DatasetContract):
    source = OnDisk(ImageFolder, write_image_folder)
