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

The value lists live in ``search_spaces/<spec>.yaml`` (default
``convnet720``) so that a smaller grid is a new YAML file, not new code.
"""

from __future__ import annotations

import itertools
import numbers
import random
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence, Union

import torch
import yaml

from proxynas.errors import ArchError, ConfigError
from proxynas.models.convnet import ACTIVATIONS, NORMS, POOLS, ConvNet
from proxynas.spaces import spec as _spec_module  # SPEC_DIR is read at call time (tests redirect it)
from proxynas.spaces.base import SEARCH_SPACES, SearchSpace

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
    """Read and check ``search_spaces/<name>.yaml``; every problem is a ConfigError.

    A sibling of :func:`proxynas.spaces.spec.load_spec` (which reads NB201-style
    cell specs) sharing its directory, so both kinds of spec sit side by side.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"search-space spec name {name!r} must be a plain file stem like 'convnet720'")
    spec_dir = Path(_spec_module.SPEC_DIR)
    path = spec_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in spec_dir.glob("*.yaml")) if spec_dir.is_dir() else []
        raise ConfigError(
            f"search-space spec {name!r} not found: {path} does not exist"
            f" (available: {', '.join(known) or 'none'})"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    return _spec_from_mapping(raw, path)


def _spec_from_mapping(raw: Any, path: Path) -> ConvNetSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(_REQUIRED)}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}")
    unknown = sorted(map(str, set(raw) - set(_REQUIRED)))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_REQUIRED)}")
    if raw["name"] != path.stem:
        raise ConfigError(f"{path}: name {raw['name']!r} must match the file name {path.stem!r}")
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
    if not isinstance(raw["citation"], str) or not raw["citation"].strip():
        raise ConfigError(f"{path}: citation must be a non-empty string")
    return ConvNetSpec(
        name=raw["name"],
        choices=tuple(choices),
        citation=" ".join(raw["citation"].split()),
        path=path,
    )


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


def _is_index(value: object, n: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < n


@SEARCH_SPACES.register("convnet720")
@dataclass(frozen=True)
class ConvNetSpace(SearchSpace):
    """The DC/DM papers' 720 ConvNets (Zhao et al., ICLR 2021; Zhao & Bilen, WACV 2023).

    ``spec`` names the YAML grid in ``search_spaces/`` (default ``convnet720``:
    depth 1-4, width 32-256, 3 activations, 5 norms, 3 pools). Arch strings look
    like ``depth=3|width=128|act=relu|norm=instancenorm|pool=avgpool``; see the
    module docstring for the format, code and enumeration order.
    """

    name: ClassVar[str] = "convnet720"

    spec: str = "convnet720"

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str):
            raise ValueError(f"{self.name}: spec must be the name of a search_spaces/*.yaml file, got {self.spec!r}")
        _ = self.grid  # load and check the YAML now, so a bad spec fails at construction

    @cached_property
    def grid(self) -> ConvNetSpec:
        """The parsed YAML spec (value lists per dimension)."""
        return _default_spec() if self.spec == "convnet720" else load_convnet_spec(self.spec)

    # -- membership ---------------------------------------------------------

    def validate(self, arch: str) -> str:
        return format_convnet_arch(parse_convnet_arch(arch, self.grid), self.grid)

    def config(self, arch: str) -> Config:
        """The ``ConvNet`` keyword arguments (depth, width, act, norm, pool) of ``arch``."""
        return parse_convnet_arch(arch, self.grid)

    def enumerate(self) -> Iterator[str]:
        """All archs, ``itertools.product`` order: depth slowest, pool fastest."""
        for code in itertools.product(*(range(n) for n in self.grid.cardinalities)):
            yield self.decode(code)

    def size(self) -> int:
        return self.grid.size

    def sample(self, n: int, seed: int) -> list[str]:
        """``n`` distinct archs, uniform without replacement, via ``random.Random(seed)``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{self.name}: number of archs to sample must be an integer >= 0, got {n!r}")
        if n > self.size():
            raise ConfigError(f"{self.name}: cannot sample {n} distinct archs, the space has only {self.size()}")
        flats = random.Random(seed).sample(range(self.size()), n)
        return [self.decode(self._flat_to_code(f)) for f in flats]

    def _flat_to_code(self, flat: int) -> tuple[int, ...]:
        """Mixed-radix digits of ``flat``, depth most significant (= enumeration order)."""
        digits = []
        for n in reversed(self.grid.cardinalities):
            flat, d = divmod(flat, n)
            digits.append(d)
        return tuple(reversed(digits))

    # -- codec --------------------------------------------------------------

    def encode(self, arch: str) -> tuple[int, ...]:
        """Index of each dimension's value in its spec list, in DIMENSIONS order."""
        config = parse_convnet_arch(arch, self.grid)
        return tuple(values.index(config[dim]) for dim, values in zip(DIMENSIONS, self.grid.choices))

    def cardinalities(self) -> tuple[int, ...]:
        return self.grid.cardinalities

    def decode(self, code: Sequence[int]) -> str:
        cards = self.grid.cardinalities
        try:
            code = tuple(code)
        except TypeError:
            code = None  # reported below
        if code is None or len(code) != len(cards) or not all(_is_index(c, n) for c, n in zip(code, cards)):
            ranges = ", ".join(f"{dim} 0..{n - 1}" for dim, n in zip(DIMENSIONS, cards))
            raise ArchError(f"invalid {self.grid.name} code {code!r}: expected {len(cards)} integers ({ranges})")
        return "|".join(
            f"{dim}={values[int(c)]}" for dim, values, c in zip(DIMENSIONS, self.grid.choices, code)
        )

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
