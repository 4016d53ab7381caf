"""The 720-ConvNet search space of the dataset-condensation papers.

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021,
rank architectures trained on condensed data against the same architectures
trained on the full data over a grid of 720 ConvNets; Zhao & Bilen, "Dataset
Condensation with Distribution Matching", WACV 2023, repeat that experiment.
Each architecture is the DC ConvNet (:class:`proxynas.models.convnet.ConvNet`,
``depth`` x [Conv3x3(width) -> norm -> act -> pool] -> Linear) with one value
per dimension::

    depth  1, 2, 3, 4
    width  32, 64, 128, 256
    act    sigmoid, relu, leakyrelu
    norm   none, batchnorm, layernorm, instancenorm, groupnorm
    pool   none, maxpool, avgpool          -> 4 * 4 * 3 * 5 * 3 = 720

Arch strings
------------
The canonical name of an architecture is ``key=value`` for the five
dimensions, joined by ``|`` in the fixed order depth, width, act, norm, pool::

    depth=3|width=128|act=relu|norm=instancenorm|pool=avgpool

(that one is the papers' default ConvNet, :data:`DEFAULT_ARCH`). Parsing is
strict -- every key exactly once, in that order, values spelled exactly as in
the spec (``3``, not ``03``) -- because the string is what the ledger and the
reports join on, and a second spelling of the same network would silently
split its results. Only surrounding whitespace is ignored.

Codes, enumeration, sampling
----------------------------
``encode`` gives the index of each value in its dimension's list (so
:meth:`ConvNetSpace.cardinalities` is ``(4, 4, 3, 5, 3)``). ``enumerate`` walks
the codes in mixed-radix order with ``depth`` the most significant digit and
``pool`` the least, i.e. ``itertools.product`` over the value lists. ``sample``
draws distinct archs uniformly with ``random.Random(seed)``.

The value lists live in ``proxynas/spaces/specs/<spec>.yaml`` (default
``convnet720``) so that a smaller grid is a new YAML file, not new code.
Enumeration, sampling and codes come from
:class:`~proxynas.spaces.product.ProductSpace` (one value per dimension).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence, Union

import torch

from proxynas.errors import ArchError, ConfigError
from proxynas.models.convnet import ACTIVATIONS, NORMS, POOLS, ConvNet
from proxynas.spaces.base import SEARCH_SPACES
from proxynas.spaces.product import ProductSpace
from proxynas.spaces.spec import one_line, read_spec

#: The dimensions, in arch-string and code order; each is a ``ConvNet`` keyword.
DIMENSIONS: tuple[str, ...] = ("depth", "width", "act", "norm", "pool")

#: The ConvNet every DC-family paper trains by default (D=3, W=128, ReLU, InstanceNorm, AvgPool).
DEFAULT_ARCH = "depth=3|width=128|act=relu|norm=instancenorm|pool=avgpool"

#: ``depth``/``width`` take positive integers; the others take rows of these tables.
_TABLES: dict[str, Mapping[str, Any]] = {"act": ACTIVATIONS, "norm": NORMS, "pool": POOLS}

_REQUIRED = ("name", "dimensions", "citation")

Value = Union[int, str]
Config = dict[str, Value]


@dataclass(frozen=True)
class ConvNetSpec:
    """One ConvNet grid: ``choices[k]`` are the allowed values of ``DIMENSIONS[k]``."""

    name: str
    choices: tuple[tuple[Value, ...], ...]
    citation: str
    path: Path

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.choices)

    @property
    def size(self) -> int:
        n = 1
        for c in self.choices:
            n *= len(c)
        return n

    def values(self, dim: str) -> tuple[Value, ...]:
        return self.choices[DIMENSIONS.index(dim)]


def load_convnet_spec(name: str) -> ConvNetSpec:
    """Read and check the ConvNet grid ``specs/<name>.yaml``; every problem is a ConfigError.

    The file is found and its common keys checked by
    :func:`proxynas.spaces.spec.read_spec`, the loader of every spec kind.
    """
    raw, path = read_spec(name, _REQUIRED)
    dims = raw["dimensions"]
    if not isinstance(dims, dict):
        raise ConfigError(f"{path}: dimensions must map each of {', '.join(DIMENSIONS)} to a list of values")
    if list(dims) != list(DIMENSIONS):
        raise ConfigError(
            f"{path}: dimensions must be exactly {', '.join(DIMENSIONS)} in that order"
            f" (the arch-string order), got {', '.join(map(str, dims)) or 'none'}"
        )
    choices = []
    for dim in DIMENSIONS:
        values = dims[dim]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: dimensions.{dim} must be a non-empty list, got {values!r}")
        if dim in _TABLES:
            table = _TABLES[dim]
            bad = [v for v in values if not isinstance(v, str) or v not in table]
            if bad:
                raise ConfigError(
                    f"{path}: dimensions.{dim} has unknown value(s) {', '.join(map(repr, bad))};"
                    f" implemented: {', '.join(table)}"
                )
        else:
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if bad:
                raise ConfigError(
                    f"{path}: dimensions.{dim} values must be integers >= 1, got {', '.join(map(repr, bad))}"
                )
        if len(set(values)) != len(values):
            raise ConfigError(f"{path}: dimensions.{dim} values must be distinct, got {values}")
        choices.append(tuple(values))
    return ConvNetSpec(name=raw["name"], choices=tuple(choices), citation=one_line(raw["citation"]), path=path)


@lru_cache(maxsize=None)
def _default_spec() -> ConvNetSpec:
    return load_convnet_spec("convnet720")


def expected_format(spec: ConvNetSpec | None = None) -> str:
    """The arch-string template, shown in every parse error."""
    spec = spec or _default_spec()
    return "|".join(f"{dim}={{{','.join(map(str, vals))}}}" for dim, vals in zip(DIMENSIONS, spec.choices))


def _example(spec: ConvNetSpec) -> str:
    """:data:`DEFAULT_ARCH` if ``spec`` contains it, else its first arch."""
    default = dict(field.split("=") for field in DEFAULT_ARCH.split("|"))
    if all(default[dim] in map(str, values) for dim, values in zip(DIMENSIONS, spec.choices)):
        return DEFAULT_ARCH
    return "|".join(f"{dim}={values[0]}" for dim, values in zip(DIMENSIONS, spec.choices))


def _fail(arch: object, problem: str, spec: ConvNetSpec) -> ArchError:
    return ArchError(
        f"invalid {spec.name} arch {arch!r}: {problem}; expected format {expected_format(spec)}"
        f", e.g. {_example(spec)!r}"
    )


def parse_convnet_arch(arch: str, spec: ConvNetSpec | None = None) -> Config:
    """``{"depth": int, "width": int, "act": str, "norm": str, "pool": str}`` of ``arch``.

    The result is ready to pass to ``ConvNet(**config)``. Strict about key order
    and spelling (see the module docstring); every problem is an ArchError.
    """
    spec = spec or _default_spec()
    if not isinstance(arch, str):
        raise _fail(arch, f"expected a string, got {type(arch).__name__}", spec)
    tokens = arch.strip().split("|")
    if len(tokens) != len(DIMENSIONS):
        raise _fail(
            arch, f"found {len(tokens)} field(s) separated by '|', expected {len(DIMENSIONS)}", spec
        )
    config: Config = {}
    for k, (token, dim) in enumerate(zip(tokens, DIMENSIONS)):
        key, sep, text = token.partition("=")
        if not sep or not key:
            raise _fail(arch, f"field {k + 1} {token!r} must look like '{dim}=value'", spec)
        if key != dim:
            if key in DIMENSIONS:
                problem = f"field {k + 1} is {key!r}, expected {dim!r} (fields go in the order {', '.join(DIMENSIONS)})"
            else:
                problem = f"unknown field {key!r}; fields are {', '.join(DIMENSIONS)}"
            raise _fail(arch, problem, spec)
        values = spec.choices[k]
        by_text = {str(v): v for v in values}
        if text not in by_text:
            raise _fail(arch, f"unknown {dim} {text!r}; allowed: {', '.join(by_text)}", spec)
        config[dim] = by_text[text]
    return config


def format_convnet_arch(config: Mapping[str, Any], spec: ConvNetSpec | None = None) -> str:
    """The canonical string of a ``{dimension: value}`` mapping (inverse of :func:`parse_convnet_arch`)."""
    spec = spec or _default_spec()
    if not isinstance(config, Mapping):
        raise _fail(config, f"expected a mapping of {', '.join(DIMENSIONS)}, got {type(config).__name__}", spec)
    missing = [d for d in DIMENSIONS if d not in config]
    extra = sorted(map(str, set(config) - set(DIMENSIONS)))
    if missing or extra:
        problem = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise _fail(dict(config), problem, spec)
    fields = []
    for dim, values in zip(DIMENSIONS, spec.choices):
        value = config[dim]
        # Exact type: True == 1 and 3.0 == 3 must not pass for depth/width, nor "3".
        if not any(type(v) is type(value) and v == value for v in values):
            raise _fail(dict(config), f"unknown {dim} {value!r}; allowed: {', '.join(map(str, values))}", spec)
        fields.append(f"{dim}={value}")
    return "|".join(fields)


@SEARCH_SPACES.register("convnet720")
@dataclass(frozen=True)
class ConvNetSpace(ProductSpace):
    """The DC/DM papers' 720 ConvNets (Zhao et al., ICLR 2021; Zhao & Bilen, WACV 2023).

    ``spec`` names the YAML grid in ``proxynas/spaces/specs/`` (default
    ``convnet720``: depth 1-4, width 32-256, 3 activations, 5 norms, 3 pools).
    Arch strings look like ``depth=3|width=128|act=relu|norm=instancenorm|pool=avgpool``;
    see the module docstring for the format, code and enumeration order.
    """

    name: ClassVar[str] = "convnet720"

    spec: str = "convnet720"

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str):
            raise ValueError(
                f"{self.name}: spec must be the name of a proxynas/spaces/specs/*.yaml file, got {self.spec!r}"
            )
        _ = self.grid  # load and check the YAML now, so a bad spec fails at construction

    @cached_property
    def grid(self) -> ConvNetSpec:
        """The parsed YAML spec (value lists per dimension)."""
        return _default_spec() if self.spec == "convnet720" else load_convnet_spec(self.spec)

    def config(self, arch: str) -> Config:
        """The ``ConvNet`` keyword arguments (depth, width, act, norm, pool) of ``arch``."""
        return parse_convnet_arch(arch, self.grid)

    # -- the product: one value per dimension --------------------------------------

    def choices(self) -> tuple[tuple[Value, ...], ...]:
        return self.grid.choices

    def arch_values(self, arch: str) -> tuple[Value, ...]:
        config = parse_convnet_arch(arch, self.grid)
        return tuple(config[dim] for dim in DIMENSIONS)

    def arch_string(self, values: Sequence[Value]) -> str:
        if len(values) != len(DIMENSIONS):
            raise _fail(tuple(values), f"got {len(values)} values, expected {len(DIMENSIONS)}", self.grid)
        return format_convnet_arch(dict(zip(DIMENSIONS, values)), self.grid)

    @property
    def label(self) -> str:
        return self.grid.name

    def code_help(self) -> str:
        return "(" + ", ".join(f"{dim} 0..{n - 1}" for dim, n in zip(DIMENSIONS, self.cardinalities())) + ")"

    # -- networks -----------------------------------------------------------

    def build(self, arch: str, *, in_channels: int, num_classes: int, image_size: int) -> torch.nn.Module:
        """A fresh :class:`ConvNet`; ``image_size`` fixes LayerNorm shapes and the classifier width."""
        sizes = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        for key, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {key} must be an integer >= 1, got {value!r}")
        return ConvNet(
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            **parse_convnet_arch(arch, self.grid),
        )
