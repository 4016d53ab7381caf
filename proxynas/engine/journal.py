"""What a running stage has finished so far, so that a killed run resumes inside the stage.

A stage's outputs are written once, when it ends; a stage that scores 1,000
architectures would lose every one of them to a ``kill -9`` at the 999th. A
stage that declares a ``journal`` parameter gets a :class:`Journal` from the
runner: it records each finished piece of work under a name (an arch), and a
rerun of the same stage (same cache key) reads them back instead of redoing
them. The runner deletes the journal once the stage's outputs are in the
cache. Records are small JSON documents, each written to a temporary file and
renamed into place, so a crash leaves a record whole or absent.

Entries live at ``<cache root>/.journal/<stage>/<key>/<sha256 of the name>.json``
(:meth:`proxynas.engine.cache.Cache.journal`); without a cache the journal
lives in memory and resumes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

__all__ = ["Journal"]


class Journal:
    """Named JSON records of finished work, kept in ``folder`` (in memory when it is None)."""

    def __init__(self, folder: Path | str | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[str, Any] = {}

    def _path(self, name: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{hashlib.sha256(name.encode('utf-8')).hexdigest()}.json"

    def get(self, name: str) -> Any | None:
        """The record stored under ``name``, or None (also for an unreadable one: it is redone)."""
        if self.folder is None:
            return self._memory.get(name)
        try:
            record = json.loads(self._path(name).read_text())
        except (OSError, ValueError):
            return None
        return record["value"] if isinstance(record, dict) and record.get("name") == name else None

    def put(self, name: str, value: Any) -> None:
        """Store ``value`` (JSON-able; NaN and infinities allowed) under ``name``, atomically."""
        if self.folder is None:
            self._memory[name] = value
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self._path(name)
        tmp = final.with_name(f".tmp-{uuid.uuid4().hex}")
        with open(tmp, "w") as fh:
            json.dump({"name": name, "value": value}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    def save_state(self, name: str, state: Any) -> None:
        """Store ``state`` (anything ``torch.save`` takes: tensors, optimizer and RNG states) under ``name``.

        One state per name, replaced atomically: a long computation's
        checkpoint, as opposed to :meth:`put`'s small finished records.
        """
        if self.folder is None:
            self._memory[f"state:{name}"] = state
            return
        import torch  # lazy: engine modules must not pay for torch when only computing keys

        self.folder.mkdir(parents=True, exist_ok=True)
        final = self._path(f"state:{name}").with_suffix(".pt")
        tmp = final.with_name(f".tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as fh:  # through a handle: torch's zip writer names the archive after a path
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    def load_state(self, name: str) -> Any | None:
        """The state last saved under ``name`` (None if there is none or it cannot be read)."""
        if self.folder is None:
            return self._memory.get(f"state:{name}")
        import torch

        path = self._path(f"state:{name}").with_suffix(".pt")
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # noqa: BLE001 - a torn or missing state is started afresh
            return None

    def __len__(self) -> int:
        if self.folder is None:
            return len(self._memory)
        return len(list(self.folder.glob("*.json"))) if self.folder.is_dir() else 0

    def clear(self) -> None:
        """Forget every record (the stage's outputs now hold them)."""
        self._memory.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Journal({str(self.folder) if self.folder else 'memory'!r}, {len(self)} records)"
