"""Progress reporting passed into long-running code (never a global)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called as ``progress(done, total, **info)``; e.g. ``info={"loss": 0.3}``."""

    def __call__(self, done: int, total: int, **info: float) -> None: ...


def null_progress(done: int, total: int, **info: float) -> None:
    """A :class:`Progress` that reports nothing."""
