"""Allowed values of config dataclass fields, declared beside the field: ``x: int = checked(10, ge=1)``.

:func:`checked` is :func:`dataclasses.field` with the field's bounds, choices
or a custom check kept in its metadata; :func:`check_fields` enforces them and
the :class:`Checked` mixin runs it from ``__post_init__``, so a setting is
checked however its dataclass is built: from YAML by
:func:`proxynas.config.typed.from_dict` (which turns the ValueError into a
ConfigError naming the key path) or directly in Python. The field's type hint
is checked too (``int`` rejects ``True`` and ``2.5``; ``X | None`` lets
``None`` through). Errors are one line naming the field and what is allowed::

    iterations must be an integer > 0, got 0
    momentum must be in [0, 1), got 1.5
    unknown init 'zeros'; choose one of: real, noise

Bounds reject NaN unless ``allow_nan=True`` (for learning rates whose NaN is
reported later as a divergence naming the setting). A subclass that only
changes a field's default keeps its base's check. Cross-field and other
non-trivial checks stay in a ``__post_init__`` that calls
``super().__post_init__()`` first.

This module imports nothing from proxynas, so plugin base classes low in the
import graph can use it (:mod:`proxynas.config.typed` imports the whole
pipeline config); ``proxynas.config.typed`` re-exports it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Literal, Union

__all__ = ["KEYED_WHEN_SET", "Check", "Checked", "check_fields", "checked"]

_KEY = "proxynas.check"  # the field metadata key holding its Check
#: field metadata flag: leave the field out of cache keys while it holds its default
KEYED_WHEN_SET = "proxynas.keyed_when_set"


@dataclass(frozen=True)
class Check:
    """What a :func:`checked` field allows (``None`` = no such bound)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    allow_nan: bool = False
    #: called with the value (unless None); raises ValueError with its own one-line message
    check: Callable[[Any], None] | None = None


def checked(
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: typing.Iterable | None = None,
    allow_nan: bool = False,
    check: Callable[[Any], None] | None = None,
    keyed_when_set: bool = False,
    **field_kwargs: Any,
) -> Any:
    """A dataclass field whose value is checked when the dataclass is built (see the module doc).

    ``keyed_when_set``: the field is part of cache keys only when it differs
    from its default (:func:`proxynas.engine.keys.canonicalize`) -- for a
    setting added to an existing plugin whose default keeps the earlier
    behaviour, so results cached before it existed stay valid.
    """
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise TypeError("give at most one lower bound (ge or gt) and one upper bound (le or lt)")
    spec = Check(ge, gt, le, lt, None if choices is None else tuple(choices), allow_nan, check)
    metadata = {_KEY: spec, KEYED_WHEN_SET: True} if keyed_when_set else {_KEY: spec}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata, **field_kwargs)


class Checked:
    """Mixin: ``__post_init__`` runs :func:`check_fields`.

    A subclass that needs its own ``__post_init__`` (a cross-field check)
    calls ``super().__post_init__()`` first.
    """

    def __post_init__(self) -> None:
        check_fields(self)


def check_fields(obj: Any) -> None:
    """Raise ValueError naming the first :func:`checked` field of dataclass ``obj`` whose value is not allowed."""
    for name, spec, kind, optional, choices in _plan(type(obj)):
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if choices is not None:
            if not _is_kind(value, kind) or value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices))}")
        elif not (_is_kind(value, kind) and _in_bounds(value, spec)):
            raise ValueError(f"{name} must be {_allowed(spec, kind, optional)}, got {value!r}")
        if spec.check is not None:
            spec.check(value)


@functools.lru_cache(maxsize=None)
def _plan(cls: type) -> tuple:
    """``(name, Check, kind, None allowed, choices)`` per checked field; kind is "bool", "int", "float", "str" or None."""
    specs = {f.name: _spec(cls, f.name) for f in dataclasses.fields(cls)}
    fields = [f for f in dataclasses.fields(cls) if specs[f.name] is not None]
    if not fields:
        return ()
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an unresolvable annotation: check values, not types
        hints = {}
    plan = []
    for f in fields:
        spec: Check = specs[f.name]
        tp = hints.get(f.name, Any)
        args = typing.get_args(tp)
        optional = False
        if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
            optional = True
            rest = [a for a in args if a is not type(None)]
            tp = rest[0] if len(rest) == 1 else Any
        choices = spec.choices
        if choices is None and typing.get_origin(tp) is Literal:
            choices = typing.get_args(tp)
        kind = next((k for k, t in _KINDS.items() if tp is t), None)
        plan.append((f.name, spec, kind, optional, choices))
    return tuple(plan)


def _spec(cls: type, name: str) -> Check | None:
    """The Check of field ``name``: its own, else the nearest base class's.

    A subclass that only changes a default (``iterations: int = 50``) keeps
    the check its base declared.
    """
    for klass in cls.__mro__:
        field = getattr(klass, "__dataclass_fields__", {}).get(name)
        if field is not None and _KEY in field.metadata:
            return field.metadata[_KEY]
    return None


_KINDS = {"bool": bool, "int": int, "float": float, "str": str}


def _is_kind(value: Any, kind: str | None) -> bool:
    if kind is None:
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    number = numbers.Integral if kind == "int" else numbers.Real
    return isinstance(value, number) and not isinstance(value, bool)


def _in_bounds(value: Any, spec: Check) -> bool:
    if spec.ge is None and spec.gt is None and spec.le is None and spec.lt is None:
        return True
    try:
        if math.isnan(value):
            return spec.allow_nan
    except (TypeError, OverflowError):
        pass
    try:
        return bool(
            (spec.ge is None or value >= spec.ge)
            and (spec.gt is None or value > spec.gt)
            and (spec.le is None or value <= spec.le)
            and (spec.lt is None or value < spec.lt)
        )
    except TypeError:
        return False


def _allowed(spec: Check, kind: str | None, optional: bool) -> str:
    """``an integer > 0``, ``in [0, 1)``, ``true or false``... (what the error says is allowed)."""
    low = (">=", spec.ge) if spec.ge is not None else (">", spec.gt) if spec.gt is not None else None
    high = ("<=", spec.le) if spec.le is not None else ("<", spec.lt) if spec.lt is not None else None
    if low and high:
        bounds = f"in {'[' if low[0] == '>=' else '('}{_fmt(low[1])}, {_fmt(high[1])}{']' if high[0] == '<=' else ')'}"
    elif low or high:
        op, bound = low or high
        bounds = f"{op} {_fmt(bound)}"
    else:
        bounds = ""
    words = {"bool": "true or false", "int": "an integer", "str": "a string"}.get(kind or "", "")
    if kind == "float" and not bounds:
        words = "a number"
    text = " ".join(w for w in (words, bounds) if w) or "valid"
    return f"{text} or null" if optional else text


def _fmt(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)
