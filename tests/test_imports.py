"""The package's import structure: nothing imports the CLI, and no module imports itself in a circle.

Imports are read statically (``ast``) from every module of ``proxynas``,
including imports inside functions (a lazy import still ties two modules
together) but not ``if TYPE_CHECKING:`` blocks. ``from a.b import c`` also
runs ``a/__init__`` and ``a/b/__init__``, so those count as imported too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "proxynas"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _imported(module: str, node: ast.AST) -> set[str]:
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if MODULES[module].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        names = {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    found = set()
    for name in names:
        parts = name.split(".")
        # the module itself and every package above it run on import
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)
    return found


def import_graph() -> dict[str, set[str]]:
    edges = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets |= _imported(module, node)
        # a package importing its own submodules (re-exports) and the packages above a module are not cycles
        edges[module] = {t for t in targets - {module} if not t.startswith(module + ".") and not module.startswith(t + ".")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_the_cli_but_main():
    edges = import_graph()
    importers = sorted(m for m, targets in edges.items() if "proxynas.cli" in targets)
    assert importers == ["proxynas.__main__"]


def test_no_import_cycles_inside_the_package():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("module", ["proxynas.app", "proxynas.pipeline", "proxynas.search.objective", "proxynas.tune"])
def test_runner_builders_do_not_reach_for_the_cli(module):
    assert "proxynas.cli" not in import_graph()[module]


def test_the_cli_path_does_not_import_torchvision():
    """torchvision's package import pulls in torch._dynamo (seconds), which a cached run or a one-line
    bad-input error would pay for nothing; the modules that need it import it where they use it."""
    import subprocess
    import sys

    probe = ("import sys, proxynas.cli, proxynas.app, proxynas.pipeline, proxynas.plots; "
             "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"
