"""Every registered plugin is tested by a contract subclass, and plugin packages find new modules.

A distiller, proxy, search space or dataset source added without a subclass of its contract
(:mod:`proxynas.testing`) somewhere under tests/ fails here, naming what to add.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import proxynas.config.pipeline  # noqa: F401  (imports every plugin package, proxynas.reference included)
from proxynas.data import DATASETS
from proxynas.distill import DISTILLERS, PreparedDistiller
from proxynas.proxies import PROXIES
from proxynas.spaces import SEARCH_SPACES
from proxynas.testing.datasets import DatasetContract
from proxynas.testing.distillers import DistillerContract, PreparedDistillerContract
from proxynas.testing.proxies import ProxyContract
from proxynas.testing.spaces import SearchSpaceContract

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

CONTRACTS = {
    "distiller": (DistillerContract, DISTILLERS, "distiller = ..."),
    "proxy": (ProxyContract, PROXIES, "proxy = ..."),
    "dataset": (DatasetContract, DATASETS, "source = ..."),
    "search space": (SearchSpaceContract, SEARCH_SPACES, "space = ..."),
}


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


@pytest.fixture(scope="module")
def contract_tests() -> dict[str, set[type]]:
    """Test classes subclassing each contract, from every test module that mentions one."""
    names = [cls.__name__ for cls, _, _ in CONTRACTS.values()]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for path in sorted(TESTS.rglob("test_*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue
        if any(name in path.read_text(encoding="utf-8") for name in names):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            importlib.import_module(module)
    return {
        kind: {sub for sub in _subclasses(contract) if sub.__name__.startswith("Test")}
        for kind, (contract, _, _) in CONTRACTS.items()
    }


@pytest.mark.parametrize("kind", list(CONTRACTS))
def test_every_registered_plugin_has_a_contract_test(kind, contract_tests):
    contract, registry, attribute = CONTRACTS[kind]
    covered = {sub.plugin_type().name for sub in contract_tests[kind]}
    missing = sorted(set(registry.names()) - covered)
    assert not missing, (
        f"no {contract.__name__} subclass under tests/ for {kind} {', '.join(map(repr, missing))}; "
        f"add `class Test<Name>Contract({contract.__name__}): {attribute}` to its test module"
    )


def test_contract_tests_test_registered_classes(contract_tests):
    for kind, (_, registry, _) in CONTRACTS.items():
        for sub in contract_tests[kind]:
            plugin = sub.plugin_type()
            assert registry.get(plugin.name) is plugin, f"{sub.__qualname__} tests an unregistered {kind}"


def test_prepared_distillers_use_the_prepared_contract(contract_tests):
    for sub in contract_tests["distiller"]:
        prepared = issubclass(sub.plugin_type(), PreparedDistiller)
        assert prepared == issubclass(sub, PreparedDistillerContract), (
            f"{sub.__qualname__}: a PreparedDistiller is tested with PreparedDistillerContract, any other"
            " distiller with DistillerContract"
        )


# -- discovery ---------------------------------------------------------------------------

PROBES = {
    "distill": (
        "DISTILLERS",
        """
        from dataclasses import dataclass
        from proxynas.distill.base import DISTILLERS, Distiller

        @DISTILLERS.register("zz_probe")
        @dataclass(frozen=True)
        class Probe(Distiller):
            iterative = False

            def distill(self, train, ipc, *, seed, device, progress=None):
                raise NotImplementedError
        """,
    ),
    "proxies": (
        "PROXIES",
        """
        from dataclasses import dataclass
        from proxynas.proxies.base import PROXIES, Proxy

        @PROXIES.register("zz_probe")
        @dataclass(frozen=True)
        class Probe(Proxy):
            def score(self, arch, ctx):
                return 0.0
        """,
    ),
    "data": (
        "DATASETS",
        """
        from dataclasses import dataclass
        from proxynas.data.base import DATASETS, DatasetSource

        @DATASETS.register("zz_probe")
        @dataclass(frozen=True)
        class Probe(DatasetSource):
            def load(self):
                raise NotImplementedError
        """,
    ),
}

# Run in a fresh interpreter: a finder adds a folder holding one extra module to
# each plugin package's search path, as if the module had been dropped into it.
CHECK = """
import importlib.abc, importlib.machinery, sys

EXTRA = {extra!r}

class AddFolder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        package = name.rpartition(".")[2]
        if name.startswith("proxynas.") and name.count(".") == 1 and package in EXTRA:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            spec.submodule_search_locations.append(EXTRA[package])
            return spec
        return None

sys.meta_path.insert(0, AddFolder())
import proxynas.distill, proxynas.proxies, proxynas.data
from proxynas.distill import DISTILLERS
from proxynas.proxies import PROXIES
from proxynas.data import DATASETS
for package, registry in {registries!r}.items():
    assert "zz_probe" in globals()[registry].names(), f"proxynas.{{package}} did not find a new module"
    assert f"proxynas.{{package}}.zz_probe" in sys.modules
print("found")
"""


def test_plugin_packages_register_a_module_dropped_into_them(tmp_path):
    extra = {}
    for package, (_, source) in PROBES.items():
        folder = tmp_path / package
        folder.mkdir()
        (folder / "zz_probe.py").write_text(textwrap.dedent(source), encoding="utf-8")
        extra[package] = str(folder)
    registries = {package: registry for package, (registry, _) in PROBES.items()}
    script = CHECK.format(extra=extra, registries=registries)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "found", result.stderr[-2000:]
