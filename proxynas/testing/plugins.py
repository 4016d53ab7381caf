"""Checks every plug-in meets, whatever its kind: registered under its name, rebuilt from its
config, and citing the paper it implements. The contract suites call them."""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

from proxynas.registry import Registry

__all__ = ["assert_cites_a_paper", "assert_registered"]

#: a year (1950-2099) or a venue / archive a method's paper appeared in
_CITATION = re.compile(
    r"\b(19[5-9]\d|20\d\d)\b|\b(NeurIPS|NIPS|ICLR|ICML|CVPR|ICCV|ECCV|AAAI|IJCAI|TPAMI|JMLR|TMLR|arXiv)\b"
)



def assert_registered(obj: Any, registry: Registry, base: type) -> None:
    """``obj``'s class is in ``registry`` under its ``name``, and ``obj`` survives its config.

    The config round trip is what a pipeline does: ``to_dict`` (with the
    registered ``name``), written to YAML and read back, then resolved through
    the registry into a new instance that must equal ``obj`` -- so a class
    registered under another name, a setting ``to_dict`` drops or one
    ``from_dict`` cannot rebuild all fail here.
    """
    import proxynas.config.pipeline  # noqa: F401  (declares the plugin base classes to the config loader)
    from proxynas.config.typed import convert, to_dict

    cls = type(obj)
    name = getattr(cls, "name", None)
    assert isinstance(name, str) and name, f"{cls.__name__} has no registered name"
    assert name in registry.names(), f"{cls.__name__} ({name!r}) is not in the {registry.kind} registry"
    assert registry.get(name) is cls, f"{registry.kind} {name!r} is {registry.get(name)!r}, not {cls!r}"
    data = to_dict(obj)
    assert data.get("name") == name, f"to_dict({cls.__name__}(...)) names it {data.get('name')!r}, not {name!r}"
    text = yaml.safe_dump(data)
    rebuilt = convert(base, yaml.safe_load(text), registry.kind)
    assert type(rebuilt) is cls
    assert rebuilt == obj, f"{cls.__name__} rebuilt from its config differs:\n{text}"


def assert_cites_a_paper(cls: type) -> None:
    """``cls`` has a docstring, and it or its module's names a year or a venue."""
    own = (cls.__doc__ or "").strip()
    assert own, f"{cls.__name__} has no docstring"
    module = sys.modules[cls.__module__].__doc__ or ""
    assert _CITATION.search(own) or _CITATION.search(module), (
        f"neither {cls.__name__}'s docstring nor {cls.__module__}'s cites a paper (a year or a venue)"
    )
