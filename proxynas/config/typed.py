"""Build typed, frozen dataclass configs from plain YAML data, with one-line errors.

``from_dict(Cls, data, path)`` walks ``Cls``'s type hints: unknown keys, wrong
types and values rejected by ``__post_init__`` or by a field's declared checks
(``x: int = checked(10, ge=1)``, see :mod:`proxynas.fields`, re-exported here)
become a :class:`ConfigError` that names the dotted key and what is allowed. Fields typed as a plugin base
class (a dataset source, a search space, a distiller...) are resolved through
that base's registry from a ``name`` key, so a plugin's settings are its own
dataclass fields and are validated the same way.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Mapping, Union

import yaml

from proxynas.errors import ConfigError, UnknownNameError
from proxynas.fields import Check, Checked, check_fields, checked
from proxynas.registry import Registry

__all__ = [
    "Check",
    "Checked",
    "ConfigLoader",
    "apply_overrides",
    "check_fields",
    "checked",
    "convert",
    "flatten",
    "from_dict",
    "load_yaml",
    "plugin_registry",
    "register_plugin_base",
    "to_dict",
    "yaml_error_message",
]


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but numbers like ``1e6``, ``1e-3`` and ``1.5e3`` are floats.

    PyYAML implements YAML 1.1, whose float pattern needs a dot and a signed
    exponent, so ``lr: 1e-3`` would be the *string* ``"1e-3"``; YAML 1.2 (and
    every user) reads it as a number. Used for pipeline files and ``--set``
    values alike.
    """


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
        |[-+]?(?:[0-9][0-9_]*)\.[0-9_]*
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML ``text`` with :class:`ConfigLoader` (``yaml.YAMLError`` if malformed)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506  (a SafeLoader subclass)


def yaml_error_message(exc: yaml.YAMLError) -> str:
    """One line locating a YAML syntax error: ``line L, column C: problem (context)``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(exc, "context", None)
    if context:
        start = getattr(exc, "context_mark", None)
        if start is not None and (mark is None or (start.line, start.column) != (mark.line, mark.column)):
            context += f" that starts at line {start.line + 1}, column {start.column + 1}"
        problem += f" ({context})"
    return where + problem


#: plugin base class -> registry that resolves ``{"name": ..., **settings}``
_PLUGIN_REGISTRIES: dict[type, Registry] = {}


def register_plugin_base(base: type, registry: Registry) -> None:
    """Let config fields typed ``base`` be built from ``{"name": ..., **settings}``."""
    _PLUGIN_REGISTRIES[base] = registry


def plugin_registry(tp: Any) -> Registry | None:
    return _PLUGIN_REGISTRIES.get(tp) if isinstance(tp, type) else None


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Instantiate dataclass ``cls`` from mapping ``data``; errors name ``path.key``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping of settings, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key '{where}{unknown[0]}'; allowed keys: {', '.join(fields) or '(none)'}"
        )
    kwargs = {k: convert(hints[k], v, _join(path, k)) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
        check_fields(obj)  # also when a subclass's own __post_init__ skipped Checked's
        return obj
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check/convert one YAML value against type hint ``tp``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not allowed; choose one of: {', '.join(map(str, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        item = args[0] if args else Any
        items = [convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        val_tp = args[1] if len(args) == 2 else Any
        registry = plugin_registry(val_tp)
        if registry is not None:
            # ``{registered_name: {settings}}``: the key selects the plugin
            return {k: _plugin(val_tp, registry, {"name": k, **(v or {})}, _join(path, k)) for k, v in value.items()}
        return {str(k): convert(val_tp, v, _join(path, k)) for k, v in value.items()}
    registry = plugin_registry(tp)
    if registry is not None:
        return _plugin(tp, registry, value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_describe(value)}; write a whole number, e.g. 10")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_describe(value)}; write one, e.g. 0.05 or 1e-3")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"config type {tp!r} at {path} is not supported")


def _plugin(base: type, registry: Registry, value: Any, path: str) -> Any:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or "name" not in value:
        names = list(registry.names())
        raise ConfigError(
            f"{path}: expected a mapping with 'name' (one of: {', '.join(names)});"
            f" give {path}.name (e.g. --set {path}.name={names[0] if names else 'NAME'}) or a full {path} section"
        )
    settings = dict(value)
    name = settings.pop("name")
    try:
        cls = registry.get(name)
    except UnknownNameError as exc:
        raise ConfigError(f"{_join(path, 'name')}: {exc}") from None
    if "preset" in settings:
        # a plugin's named settings (a distiller's paper settings); explicit keys win
        preset = settings.pop("preset")
        presets = getattr(cls, "presets", None) or {}
        if not isinstance(preset, str) or preset not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise ConfigError(
                f"{_join(path, 'preset')}: {name} has no preset {preset!r} (presets: {known}); name one or drop it"
            )
        settings = {**presets[preset], **settings}
    return from_dict(cls, settings, path)


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict`: plain YAML-able data (plugins get their ``name``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        if any(isinstance(obj, base) for base in _PLUGIN_REGISTRIES):
            out["name"] = type(obj).name
        for f in dataclasses.fields(obj):
            if f.init:
                out[f.name] = to_dict(getattr(obj, f.name))
        return out
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = _join(prefix, k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def apply_overrides(data: Mapping, overrides: list[str]) -> dict:
    """Apply CLI ``key.path=value`` overrides (values parsed as YAML) to raw config data."""
    result = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value; e.g. --set distill.ipc=10")
        try:
            value = load_yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = result
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                section = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"override {key}: {section} is the value {_describe(child)}, not a section of settings;"
                    f" make {section} a mapping (key: value lines) in the pipeline file, or override {section} itself"
                )
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
