"""Networks used to distil datasets and to define search spaces."""

from proxynas.models.convnet import ACTIVATIONS, NORMS, POOLS, ConvNet

__all__ = ["ACTIVATIONS", "NORMS", "POOLS", "ConvNet"]
