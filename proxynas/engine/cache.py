"""A content-addressed, crash-safe store of stage outputs.

An entry lives at ``<root>/<stage_name>/<key>/`` and holds ``outputs.pt`` (a
``torch.save``-d dict) and ``meta.json``. Entries are written into a temporary
folder beside them and renamed into place, so a crash at any moment (even
``kill -9``) leaves either a complete entry or none; stale temporary folders are
ignored and removed by :meth:`Cache.clean_partial`.

The key of a stage is a sha256 over the canonical JSON of its name, version,
params, output names and the keys of the data it reads, so it changes exactly
when something that determines the outputs changes.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from proxynas.errors import ProxynasError

if TYPE_CHECKING:
    from proxynas.engine.graph import Stage

__all__ = [
    "Cache",
    "CacheMiss",
    "CacheWarning",
    "canonicalize",
    "canonical_json",
    "stage_key",
    "value_key",
]

#: Bump to invalidate every cache entry when the key recipe changes.
KEY_FORMAT = 1

_TMP_PREFIX = ".tmp-"
_SAFE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class CacheWarning(UserWarning):
    """A cache entry was unreadable and is treated as a miss."""


class CacheMiss(ProxynasError, KeyError):
    """:meth:`Cache.load` found no usable entry."""

    def __str__(self) -> str:
        return str(self.args[0])


# -- canonical form ----------------------------------------------------------
def canonicalize(obj: Any) -> Any:
    """A JSON-able, order-independent form of ``obj`` for hashing.

    Handles None, bool, int, str, float (by ``repr``, so exact and NaN-safe),
    dataclasses (class qualname + fields), mappings (sorted keys), tuples/lists,
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
        return {
            "__dataclass__": type(obj).__qualname__,
            "fields": {f.name: canonicalize(getattr(obj, f.name)) for f in dataclasses.fields(obj)},
        }
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


def _check_part(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SAFE_RE.match(value):
        raise ValueError(f"invalid cache {what} {value!r}: use letters, digits, '_', '.' or '-'")
    return value


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Cache:
    """Content-addressed stage outputs under ``root`` (created on first save)."""

    OUTPUTS = "outputs.pt"
    META = "meta.json"

    def __init__(self, root: Path | str, map_location: Any = None) -> None:
        self.root = Path(root)
        self.map_location = map_location

    stage_key = staticmethod(stage_key)
    value_key = staticmethod(value_key)

    def path(self, stage_name: str, key: str) -> Path:
        """Folder of an entry (which may not exist)."""
        return self.root / _check_part(stage_name, "stage name") / _check_part(key, "key")

    def has(self, stage_name: str, key: str) -> bool:
        """True if a complete entry exists (cheap: does not read the outputs)."""
        entry = self.path(stage_name, key)
        return (entry / self.OUTPUTS).is_file() and (entry / self.META).is_file()

    def meta(self, stage_name: str, key: str) -> dict[str, Any] | None:
        """The entry's ``meta.json`` (None if missing or unreadable)."""
        try:
            with open(self.path(stage_name, key) / self.META, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def get(self, stage_name: str, key: str) -> dict[str, Any] | None:
        """The entry's outputs, or None on a miss.

        An entry that exists but cannot be read is reported with a
        :class:`CacheWarning`, removed, and treated as a miss.
        """
        entry = self.path(stage_name, key)
        if not self.has(stage_name, key):
            return None
        try:
            meta = self.meta(stage_name, key)
            if meta is None:
                raise ValueError(f"{self.META} is unreadable")
            import torch  # lazy: computing keys must not pay for importing torch

            outputs = torch.load(entry / self.OUTPUTS, map_location=self.map_location, weights_only=False)
            if not isinstance(outputs, dict):
                raise ValueError(f"{self.OUTPUTS} holds a {type(outputs).__name__}, not a dict")
            expected = meta.get("outputs")
            if isinstance(expected, list) and sorted(outputs) != sorted(expected):
                raise ValueError(f"outputs {sorted(outputs)} do not match meta {sorted(expected)}")
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is a miss
            warnings.warn(
                f"cache entry {entry} is unreadable ({type(exc).__name__}: {exc}); "
                "discarding it and recomputing",
                CacheWarning,
                stacklevel=2,
            )
            self.discard(stage_name, key)
            return None
        return outputs

    def load(self, stage_name: str, key: str) -> dict[str, Any]:
        """The entry's outputs; :class:`CacheMiss` if absent or unreadable."""
        outputs = self.get(stage_name, key)
        if outputs is None:
            raise CacheMiss(
                f"no usable cache entry for stage {stage_name!r} key {key[:12]}; run the stage again"
            )
        return outputs

    def save(self, stage_name: str, key: str, outputs: dict[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
        """Store ``outputs`` atomically; returns the entry folder.

        ``meta`` is merged into ``meta.json`` (which always records stage, key,
        created and output names). Saving a key that already has a complete
        entry keeps the existing one (entries are content-addressed).
        """
        if not isinstance(outputs, dict):
            raise TypeError(f"outputs must be a dict, got {type(outputs).__name__}")
        final = self.path(stage_name, key)
        stage_dir = final.parent
        stage_dir.mkdir(parents=True, exist_ok=True)
        record = dict(meta or {})
        record.update(
            stage=stage_name,
            key=key,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            outputs=list(outputs),
        )
        import torch

        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key[:16]}-", dir=stage_dir))
        try:
            torch.save(outputs, tmp / self.OUTPUTS)
            with open(tmp / self.META, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2, sort_keys=True, default=repr)
                f.write("\n")
            _fsync_file(tmp / self.OUTPUTS)
            _fsync_file(tmp / self.META)
            if final.exists():
                if self.has(stage_name, key):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return final
                self._move_aside(final)
            try:
                os.replace(tmp, final)
            except OSError:
                # Another process won the race with a complete entry: keep theirs.
                if not self.has(stage_name, key):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def discard(self, stage_name: str, key: str) -> bool:
        """Remove an entry (atomically hidden first); True if there was one."""
        final = self.path(stage_name, key)
        if not final.exists():
            return False
        self._move_aside(final)
        return True

    def _move_aside(self, entry: Path) -> None:
        trash = entry.parent / f"{_TMP_PREFIX}trash-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(entry, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def clean_partial(self, min_age_s: float = 0.0) -> int:
        """Delete temporary folders left by interrupted saves; returns how many.

        ``min_age_s`` spares folders modified more recently (a save that may
        still be running in another process).
        """
        if not self.root.is_dir():
            return 0
        now = time.time()
        removed = 0
        for stage_dir in self.root.iterdir():
            if not stage_dir.is_dir() or stage_dir.name.startswith("."):
                continue
            for tmp in stage_dir.glob(f"{_TMP_PREFIX}*"):
                try:
                    if min_age_s and now - tmp.stat().st_mtime < min_age_s:
                        continue
                except FileNotFoundError:
                    continue
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        return removed

    def entries(self, stage_name: str | None = None) -> list[tuple[str, str]]:
        """``(stage_name, key)`` of every complete entry, sorted."""
        if not self.root.is_dir():
            return []
        stage_dirs = [self.root / stage_name] if stage_name else sorted(self.root.iterdir())
        found = []
        for stage_dir in stage_dirs:
            if not stage_dir.is_dir() or stage_dir.name.startswith("."):
                continue
            for entry in sorted(stage_dir.iterdir()):
                if not entry.name.startswith(".") and self.has(stage_dir.name, entry.name):
                    found.append((stage_dir.name, entry.name))
        return found

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

