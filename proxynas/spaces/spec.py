"""Declarative search-space definitions: the YAML files in ``proxynas/spaces/specs/``.

The value lists of a space (NB201's ops and node count, the ConvNet grid's
depths, widths, ...) live in YAML rather than in code so that a variant space
-- fewer ops, a smaller grid -- is a new file instead of a subclass. The files
are package data, so an installed wheel has them; :func:`read_spec` is the one
loader every kind of spec goes through (file lookup, YAML parsing, required
and unknown keys, ``name`` = file stem), and each kind then checks its own
fields: :func:`load_spec` here for NB201-style cell specs (Dong & Yang, ICLR
2020), :func:`proxynas.spaces.convnet.load_convnet_spec` for ConvNet grids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proxynas.errors import ConfigError

#: The built-in specs, shipped inside the package (``proxynas.spaces`` package data).
SPEC_DIR = Path(__file__).resolve().parent / "specs"

_REQUIRED = ("name", "ops", "nodes", "channels", "cells_per_stage", "citation")


def spec_names() -> list[str]:
    """The names (file stems) of the available specs, sorted."""
    spec_dir = Path(SPEC_DIR)
    return sorted(p.stem for p in spec_dir.glob("*.yaml")) if spec_dir.is_dir() else []


def read_spec(name: str, keys: tuple[str, ...]) -> tuple[dict[str, Any], Path]:
    """The mapping in ``<SPEC_DIR>/<name>.yaml`` and its path, with exactly ``keys``.

    Checks what every spec kind shares -- a plain file stem, the file exists,
    valid YAML, a mapping, no missing or unknown key, ``name`` equal to the file
    stem -- and raises a one-line ConfigError naming the file otherwise.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"search-space spec name {name!r} must be a plain file stem like 'nb201' or 'convnet720'")
    path = Path(SPEC_DIR) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"search-space spec {name!r} not found: {path} does not exist"
            f" (available: {', '.join(spec_names()) or 'none'})"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(keys)}")
    missing = [k for k in keys if k not in raw]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}")
    unknown = sorted(map(str, set(raw) - set(keys)))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(keys)}")
    if raw["name"] != path.stem:
        raise ConfigError(f"{path}: name {raw['name']!r} must match the file name {path.stem!r}")
    if not isinstance(raw["citation"], str) or not raw["citation"].strip():
        raise ConfigError(f"{path}: citation must be a non-empty string")
    return raw, path


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (YAML folded lines) collapsed to single spaces."""
    return " ".join(text.split())


@dataclass(frozen=True)
class CellSpec:
    """One cell space: ``nodes`` nodes, each edge ``i -> j`` (i < j) one of ``ops``.

    ``channels`` / ``cells_per_stage`` are the macro-skeleton defaults under which
    the benchmark was measured (NB201: C=16, N=5), kept with the cell so that
    reported parameter counts can be compared with the benchmark's.
    """

    name: str
    ops: tuple[str, ...]
    nodes: int
    channels: int
    cells_per_stage: int
    citation: str
    path: Path

    @property
    def num_edges(self) -> int:
        """Edges of the complete DAG: node j has one edge from each i < j."""
        return self.nodes * (self.nodes - 1) // 2

    @property
    def size(self) -> int:
        """Number of distinct cells (every edge picks any op)."""
        return len(self.ops) ** self.num_edges


def load_spec(name: str) -> CellSpec:
    """Read and check the cell spec ``specs/<name>.yaml``; every problem is a ConfigError."""
    raw, path = read_spec(name, _REQUIRED)
    ops = raw["ops"]
    if not isinstance(ops, list) or not ops or not all(isinstance(o, str) and o for o in ops):
        raise ConfigError(f"{path}: ops must be a non-empty list of op names")
    if len(set(ops)) != len(ops):
        raise ConfigError(f"{path}: ops must be distinct, got {ops}")
    bad = [o for o in ops if "~" in o or "|" in o or "+" in o]
    if bad:
        # These characters are the arch-string separators; an op using one
        # could not be parsed back.
        raise ConfigError(f"{path}: op names must not contain '~', '|' or '+': {bad}")
    for key, low in (("nodes", 2), ("channels", 1), ("cells_per_stage", 1)):
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{path}: {key} must be an integer >= {low}, got {value!r}")
    return CellSpec(
        name=raw["name"],
        ops=tuple(ops),
        nodes=raw["nodes"],
        channels=raw["channels"],
        cells_per_stage=raw["cells_per_stage"],
        citation=one_line(raw["citation"]),
        path=path,
    )
