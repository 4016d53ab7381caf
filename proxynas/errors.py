"""Errors that proxynas reports to users as one line.

Every error a user can cause (bad config, unknown name, malformed arch string,
missing file, diverging objective) is a :class:`ProxynasError`; the CLI prints
``error: <message>`` and exits 2 instead of a traceback. Messages name the
problem *and* the fix.
"""

from __future__ import annotations


class ProxynasError(Exception):
    """Base class of all user-facing proxynas errors (printed as one line)."""


class ConfigError(ProxynasError):
    """A pipeline config is invalid: unknown key, wrong type or bad value."""


class UnknownNameError(ProxynasError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class GraphError(ProxynasError):
    """A stage graph is malformed: cycle, missing or duplicate output."""


class DataError(ProxynasError):
    """A dataset is missing, empty, or lacks a class."""


class ArchError(ProxynasError, ValueError):
    """An architecture string is malformed or not in the search space."""


class DivergenceError(ProxynasError):
    """An optimisation produced a NaN/inf loss or diverged."""


class PipelineError(ProxynasError):
    """A pipeline run failed as a whole (e.g. a row run in its own process exited with an error)."""
