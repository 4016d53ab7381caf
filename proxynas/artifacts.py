"""Typed stage outputs that tracking hooks know how to log.

Stages return these instead of writing files: the runner's hooks decide where
they go (MLflow artifacts, metrics), keeping stage code free of I/O.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Figure:
    """A rendered PNG, logged as ``<name>.png``."""

    name: str
    png: bytes


@dataclass(frozen=True)
class Table:
    """Rows of a results table, logged as ``<name>.csv``."""

    name: str
    rows: Sequence[Mapping[str, Any]]

    def to_csv(self) -> str:
        if not self.rows:
            return ""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()


@dataclass(frozen=True)
class Tensors:
    """Named tensors, logged as ``<name>.pt`` (``torch.load`` gives the dict back)."""

    name: str
    tensors: Mapping[str, Any]


@dataclass(frozen=True)
class Metrics:
    """Scalar metrics logged to the tracking store (NaN values are skipped)."""

    values: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluations:
    """The scored architectures of one proxy row, recorded by the ledger hook as trials of a study.

    Each record has ``arch``, ``code`` (the space's integer code), ``value``
    and any extra scalars (reference, seconds, components), kept as trial user
    attributes; ``cardinalities`` are the code positions' choice counts.
    """

    row: str
    records: Sequence[Mapping[str, Any]]
    cardinalities: Sequence[int]
    attrs: Mapping[str, Any] = field(default_factory=dict)
