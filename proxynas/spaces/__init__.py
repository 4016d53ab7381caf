"""Search spaces: which architectures exist, how they are named, and their networks.

Importing this package registers every built-in space in :data:`SEARCH_SPACES`.
"""

from proxynas.spaces.base import SEARCH_SPACES, SearchSpace
from proxynas.spaces.convnet import ConvNetSpace, ConvNetSpec, format_convnet_arch, load_convnet_spec, parse_convnet_arch
from proxynas.spaces.nb201 import NB201Space, format_arch, is_connected, parse_arch
from proxynas.spaces.nb201_network import NB201Network
from proxynas.spaces.spec import CellSpec, load_spec

__all__ = [
    "SEARCH_SPACES",
    "CellSpec",
    "ConvNetSpace",
    "ConvNetSpec",
    "NB201Network",
    "NB201Space",
    "SearchSpace",
    "format_arch",
    "format_convnet_arch",
    "is_connected",
    "load_convnet_spec",
    "load_spec",
    "parse_arch",
    "parse_convnet_arch",
]
