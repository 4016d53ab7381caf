"""Cache keys: a stage's key is a sha256 over the canonical JSON of what determines its outputs.

That is the stage's name and version, its params, its output names and the
keys of the data it reads, so a key changes exactly when something that
determines the outputs changes. A frozen dataclass in the params (a
distiller, a proxy, a search space, a dataset) contributes its class name,
its fields and its class attribute ``version`` when it declares one: bumping
a plug-in's ``version`` after a change of behaviour recomputes every stage
that uses it and everything downstream, and nothing else.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from proxynas.fields import KEYED_WHEN_SET

if TYPE_CHECKING:
    from proxynas.engine.graph import Stage

__all__ = ["KEY_FORMAT", "canonicalize", "canonical_json", "stage_key", "value_key"]

#: Bump to invalidate every cache entry when the key recipe changes
#: (2: plug-in versions are part of the canonical form of their dataclass).
KEY_FORMAT = 2


# -- canonical form ----------------------------------------------------------
def canonicalize(obj: Any) -> Any:
    """A JSON-able, order-independent form of ``obj`` for hashing.

    Handles None, bool, int, str, float (by ``repr``, so exact and NaN-safe),
    dataclasses (class qualname + fields, less those flagged ``keyed_when_set``
    that hold their default), mappings (sorted keys), tuples/lists,
    sets, paths and enums. Anything else raises TypeError naming the type.
    """
    if isinstance(obj, enum.Enum):  # first: IntEnum / StrEnum are ints / strs too
        return {"__enum__": type(obj).__qualname__, "name": obj.name}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return {"__float__": repr(obj)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        form = {
            "__dataclass__": type(obj).__qualname__,
            "fields": {
                f.name: canonicalize(getattr(obj, f.name))
                for f in dataclasses.fields(obj)
                if not _unset(obj, f)
            },
        }
        version = _class_version(obj)
        if version is not None:
            form["__version__"] = version
        return form
    if isinstance(obj, Mapping):
        items = [(canonicalize(k), canonicalize(v)) for k, v in obj.items()]
        if all(isinstance(k, str) for k, _ in items):
            return {k: v for k, v in sorted(items, key=lambda kv: kv[0])}
        items.sort(key=lambda kv: _dumps(kv[0]))
        return {"__mapping__": [[k, v] for k, v in items]}
    if isinstance(obj, (list, tuple)):
        return [canonicalize(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return {"__set__": sorted((canonicalize(v) for v in obj), key=_dumps)}
    if isinstance(obj, PurePath):
        return {"__path__": obj.as_posix()}
    raise TypeError(
        f"cannot canonicalise a {type(obj).__module__}.{type(obj).__qualname__} for a cache key; "
        "use a frozen dataclass, a mapping, a list/tuple, a Path, an enum or a scalar"
    )


def _unset(obj: Any, field: dataclasses.Field) -> bool:
    """A field flagged ``keyed_when_set`` (:func:`proxynas.fields.checked`) that holds its default."""
    if not field.metadata.get(KEYED_WHEN_SET):
        return False
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return getattr(obj, field.name) == default


def _class_version(obj: Any) -> str | None:
    """The ``version`` class attribute of a dataclass instance (None when it has none or it is a field)."""
    if any(f.name == "version" for f in dataclasses.fields(obj)):
        return None
    version = getattr(type(obj), "version", None)
    return str(version) if isinstance(version, (str, int)) and not isinstance(version, bool) else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def canonical_json(obj: Any) -> str:
    """Canonical JSON text of ``obj`` (see :func:`canonicalize`)."""
    return _dumps(canonicalize(obj))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def value_key(value: Any) -> str:
    """Key of an external input given by value (TypeError if it is not canonicalisable)."""
    return _sha256(_dumps({"format": KEY_FORMAT, "value": canonicalize(value)}))


def stage_key(stage: "Stage", upstream_keys: Mapping[str, str]) -> str:
    """Key of ``stage`` given the keys of its inputs (``input name -> key``)."""
    missing = [i for i in stage.inputs if i not in upstream_keys]
    if missing:
        raise ValueError(f"stage {stage.name!r}: no upstream key for input {missing[0]!r}")
    payload = {
        "format": KEY_FORMAT,
        "stage": stage.name,
        "version": stage.version,
        "params": canonicalize(stage.params),
        "outputs": sorted(stage.outputs),
        "inputs": {name: str(upstream_keys[name]) for name in sorted(stage.inputs)},
    }
    return _sha256(_dumps(payload))
