"""Search spaces: which architectures exist, how they are named, and their networks.

Importing this package registers every space in :data:`SEARCH_SPACES`: every
module of the package is imported (:func:`proxynas.registry.discover`), so a
new space is one module dropped in here, not a line added below. The names
re-exported below are the public API.
"""

from proxynas.registry import discover
from proxynas.spaces.base import SEARCH_SPACES, FeatureNetwork, SearchSpace
from proxynas.spaces.convnet import ConvNetSpace, ConvNetSpec, format_convnet_arch, load_convnet_spec, parse_convnet_arch
from proxynas.spaces.nb201 import NB201Space, format_arch, is_connected, parse_arch
from proxynas.spaces.nb201_network import NB201Network
from proxynas.spaces.product import ProductSpace
from proxynas.spaces.spec import CellSpec, load_spec

discover(__name__)

__all__ = [
    "SEARCH_SPACES",
    "CellSpec",
    "ConvNetSpace",
    "ConvNetSpec",
    "FeatureNetwork",
    "NB201Network",
    "NB201Space",
    "ProductSpace",
    "SearchSpace",
    "format_arch",
    "format_convnet_arch",
    "is_connected",
    "load_convnet_spec",
    "load_spec",
    "parse_arch",
    "parse_convnet_arch",
]
