"""Declarative cell-space definitions read from ``search_spaces/<name>.yaml``.

The op list and node count live in YAML rather than in code so that a user can
define a variant of the NAS-Bench-201 cell space (Dong & Yang, ICLR 2020) --
fewer ops, more nodes -- by writing a file instead of a subclass. The codec,
the sampler and the network all read their structure from a :class:`CellSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proxynas.errors import ConfigError

#: ``<repo root>/search_spaces``; the repo root is the parent of the package dir.
SPEC_DIR = Path(__file__).resolve().parents[2] / "search_spaces"

_REQUIRED = ("name", "ops", "nodes", "channels", "cells_per_stage", "citation")


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
    """Read and check ``search_spaces/<name>.yaml``; every problem is a ConfigError."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"search-space spec name {name!r} must be a plain file stem like 'nb201'")
    path = SPEC_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SPEC_DIR.glob("*.yaml")) if SPEC_DIR.is_dir() else []
        raise ConfigError(
            f"search-space spec {name!r} not found: {path} does not exist"
            f" (available: {', '.join(known) or 'none'})"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    return _from_mapping(raw, path)


def _from_mapping(raw: Any, path: Path) -> CellSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(_REQUIRED)}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_REQUIRED))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_REQUIRED)}")
    if raw["name"] != path.stem:
        raise ConfigError(f"{path}: name {raw['name']!r} must match the file name {path.stem!r}")
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
    if not isinstance(raw["citation"], str) or not raw["citation"].strip():
        raise ConfigError(f"{path}: citation must be a non-empty string")
    return CellSpec(
        name=raw["name"],
        ops=tuple(ops),
        nodes=raw["nodes"],
        channels=raw["channels"],
        cells_per_stage=raw["cells_per_stage"],
        citation=" ".join(raw["citation"].split()),
        path=path,
    )
