"""A tiny name -> class registry, so plug-ins are looked up, never if/elif'd."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

from proxynas.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to implementations of one kind (``"distiller"``, ``"proxy"``...).

    >>> r = Registry("widget")
    >>> @r.register("a")
    ... class A: ...
    >>> r.get("a") is A
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            own = getattr(obj, "__dict__", {}).get("name")
            if own is not None and own != name:
                raise ValueError(f"{self.kind} {obj!r} declares name {own!r} but is registered as {name!r}")
            if isinstance(obj, type) and own is None:
                obj.name = name  # a class knows the name it is registered under
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def discover(package: str) -> list[str]:
    """Import every module of ``package`` (recursively) so their ``@register`` decorators run.

    Plug-ins are found by scanning their package rather than listed by hand: a
    new distiller, proxy, space or dataset is one module dropped into its
    package. Returns the imported module names, sorted (a fixed order, so
    registration order never depends on the file system).
    """
    root = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.walk_packages(root.__path__, prefix=f"{package}."))
    for name in names:
        importlib.import_module(name)
    return names
