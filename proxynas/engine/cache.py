"""A content-addressed, crash-safe store of stage outputs.

An entry lives at ``<root>/<stage_name>/<key>/`` and holds ``outputs.pt`` (a
``torch.save``-d dict) and ``meta.json``. Entries are written into a temporary
folder beside them and renamed into place, so a crash at any moment (even
``kill -9``) leaves either a complete entry or none; stale temporary folders are
ignored and removed by :meth:`Cache.clean_partial`.

Keys come from :mod:`proxynas.engine.keys`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from proxynas.engine.journal import Journal
from proxynas.engine.keys import canonical_json, canonicalize, stage_key, value_key
from proxynas.errors import ProxynasError

__all__ = [
    "Cache",
    "CacheError",
    "CacheMiss",
    "CacheWarning",
    "canonicalize",
    "canonical_json",
    "stage_key",
    "value_key",
]

_TMP_PREFIX = ".tmp-"
_SAFE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class CacheWarning(UserWarning):
    """A cache entry was unreadable and is treated as a miss."""


class CacheError(ProxynasError):
    """The cache folder cannot be used (e.g. it is not writable)."""


class CacheMiss(ProxynasError, KeyError):
    """:meth:`Cache.load` found no usable entry."""

    def __str__(self) -> str:
        return str(self.args[0])


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
        """True if a complete entry exists.

        Cheap: it does not load the outputs, but checks that ``outputs.pt``
        is a whole zip archive (the ``torch.save`` format, whose directory
        sits at the end of the file), so an entry truncated or overwritten
        on disk is not reported as cached.
        """
        entry = self.path(stage_name, key)
        outputs = entry / self.OUTPUTS
        return outputs.is_file() and (entry / self.META).is_file() and zipfile.is_zipfile(outputs)

    def check_writable(self) -> None:
        """CacheError (one line) unless entries can be written under :attr:`root`; creates it.

        Runs before any stage, so that a computed result is never lost to a
        cache folder it cannot be saved in.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = Path(tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.root)[1])
            probe.unlink()
        except OSError as exc:
            raise CacheError(
                f"cache folder {self.root} is not writable ({exc.strerror or type(exc).__name__}); "
                "choose another with --cache-dir or run.cache_dir"
            ) from None

    @contextlib.contextmanager
    def lock(self, stage_name: str, key: str) -> Iterator[None]:
        """Hold the entry's lock: one process computes an entry while others wait for it.

        An exclusive ``flock`` on ``<root>/.locks/<stage>/<key>.lock``; the
        kernel releases it when its holder exits, even by ``kill -9``, so a
        killed run never blocks the next.
        """
        folder = self.root / ".locks" / _check_part(stage_name, "stage name")
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{_check_part(key, 'key')}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

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

    def journal(self, stage_name: str, key: str) -> Journal:
        """The :class:`~proxynas.engine.journal.Journal` of a stage run under ``key`` (beside the entries)."""
        return Journal(self.root / ".journal" / _check_part(stage_name, "stage name") / _check_part(key, "key"))

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

