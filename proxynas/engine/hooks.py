"""Hooks: how tracking, logging and consoles watch a run without stage code knowing.

Subclass :class:`Hook` and override what you need; the runner calls, in order::

    before_pipeline(graph, run_info)
    for each stage, in topological order:
        before_stage(stage, key, cached)
        on_progress(stage, done, total, info)      # 0..n times, if the stage reports
        after_stage(stage, key, outputs, seconds, cached)   # or on_stage_error(...)
    after_pipeline(outputs)                         # or on_pipeline_error(error)

For a cached stage ``outputs`` is a lazy mapping: reading a value loads the
stage's cache entry, so a hook that ignores outputs costs nothing.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Mapping, TextIO

if TYPE_CHECKING:
    from proxynas.engine.graph import Graph, Stage

__all__ = ["Hook", "ConsoleHook"]


class Hook:
    """No-op base class of runner hooks."""

    def before_pipeline(self, graph: "Graph", run_info: dict[str, Any]) -> None:
        """Called once before any stage.

        ``run_info`` holds ``stages`` (names, run order), ``keys`` (name -> key),
        ``cached`` (name -> bool), ``targets`` (list or None) and ``cache_root``
        (str or None).
        """

    def before_stage(self, stage: "Stage", key: str, cached: bool) -> None:
        """Called before a stage runs (``cached=False``) or is taken from the cache."""

    def on_progress(self, stage: "Stage", done: int, total: int, info: dict[str, float]) -> None:
        """Called when a running stage reports progress through its ``progress`` argument."""

    def after_stage(
        self, stage: "Stage", key: str, outputs: Mapping[str, Any], seconds: float, cached: bool
    ) -> None:
        """Called after a stage ran (its outputs are already cached) or was taken from the cache
        (``seconds`` is 0.0 then)."""

    def on_stage_error(self, stage: "Stage", key: str, error: BaseException) -> None:
        """Called when a stage raised (or returned wrong outputs); the error then propagates."""

    def after_pipeline(self, outputs: Mapping[str, Any]) -> None:
        """Called once after every stage succeeded, with the run's (lazy) outputs."""

    def on_pipeline_error(self, error: BaseException) -> None:
        """Called once when the run fails, after ``on_stage_error``; the error then propagates."""


class ConsoleHook(Hook):
    """Prints one line per stage: ``[3/7] distill_dm ... done in 12.3s`` (or ``... cached``).

    ``stream`` defaults to the *current* ``sys.stderr`` at print time.
    """

    def __init__(
        self, stream: TextIO | None = None, log_interval: float = 2.0, heartbeat: float = 30.0
    ) -> None:
        self._stream = stream
        #: in logs (not a tty), progress lines come at most this often (seconds)
        self.log_interval = log_interval
        #: in logs, a stage whose count does not move (an architecture in
        #: training reporting its epochs) still prints a line this often
        self.heartbeat = heartbeat
        self._last_print = float("-inf")
        self._last_done: int | None = None
        self._position: dict[str, int] = {}
        self._total = 0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _prefix(self, stage: "Stage") -> str:
        pos = self._position.get(stage.name)
        where = f"{pos}/{self._total}" if pos is not None else f"?/{self._total}"
        return f"[{where}] {stage.name} ..."

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def before_pipeline(self, graph: "Graph", run_info: dict[str, Any]) -> None:
        names = list(run_info.get("stages") or [s.name for s in graph.order()])
        self._position = {name: i + 1 for i, name in enumerate(names)}
        self._total = len(names)

    def before_stage(self, stage: "Stage", key: str, cached: bool) -> None:
        self._last_done = None

    def on_progress(self, stage: "Stage", done: int, total: int, info: Mapping[str, Any]) -> None:
        # On a terminal: one self-overwriting bar, redrawn at most 10 times a second.
        # In logs: a line per 10% of the count, and a heartbeat while the count stands still.
        tty = getattr(self.stream, "isatty", lambda: False)()
        now = time.monotonic()
        step = max(1, total // 10)
        moved = done != self._last_done
        crossed = moved and (done == total or (self._last_done or 0) // step != done // step)
        self._last_done = done
        if tty:
            if now - self._last_print < 0.1 and not (moved and done == total):
                return
        elif not ((crossed and now - self._last_print >= self.log_interval)
                  or (not moved and now - self._last_print >= max(self.heartbeat, self.log_interval))):
            return
        self._last_print = now
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if tty:
            filled = int(20 * done / total) if total else 0
            bar = "#" * filled + "-" * (20 - filled)
            print(f"\r\033[K{self._prefix(stage)} [{bar}] {done}/{total} {extra}".rstrip(), end="",
                  file=self.stream, flush=True)
        else:
            self._print(f"{self._prefix(stage)} {done}/{total} {extra}".rstrip())

    def after_stage(
        self, stage: "Stage", key: str, outputs: Mapping[str, Any], seconds: float, cached: bool
    ) -> None:
        if getattr(self.stream, "isatty", lambda: False)():
            print("\r\033[K", end="", file=self.stream)
        if cached:
            self._print(f"{self._prefix(stage)} cached")
        else:
            self._print(f"{self._prefix(stage)} done in {seconds:.1f}s")

    def on_stage_error(self, stage: "Stage", key: str, error: BaseException) -> None:
        message = str(error).splitlines()[0] if str(error) else ""
        detail = f"{type(error).__name__}: {message}" if message else type(error).__name__
        self._print(f"{self._prefix(stage)} failed ({detail})")
