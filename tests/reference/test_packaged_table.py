"""The NB201 table ships inside the package, so a plain clone (no ../shared beside it) works."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import proxynas
import proxynas.reference
from proxynas.config import load_config
from proxynas.reference import NB201TableProxy, default_table_path, load_table, resolve_table_path

REPO = Path(__file__).resolve().parents[2]
A1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_no_package_file_points_at_the_workplace_data():
    package = Path(proxynas.__file__).resolve().parent
    offenders = []
    for path in sorted(package.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in {".gz", ".pyc"}:
            continue
        if "../shared" in path.read_text(errors="replace"):
            offenders.append(str(path.relative_to(package)))
    assert offenders == [], f"these files name ../shared, which a plain clone lacks: {offenders}"


def test_default_table_is_a_file_inside_the_installed_package():
    path = default_table_path()
    assert path.is_file()
    assert path.parent == Path(proxynas.reference.__file__).resolve().parent / "data"
    assert path.name == "nb201_results.csv.gz"
    readme = (path.parent / "README.md").read_text()
    for fact in ("NAS-Bench-201", "NATS-Bench", "MIT", "Dong", "proxynas nb201 export", "params_MB"):
        assert fact in readme, fact


def test_default_proxy_and_load_table_read_the_packaged_table_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared here
    proxy = NB201TableProxy()
    assert resolve_table_path(proxy.path) == default_table_path()
    table = load_table(proxy.path)
    assert len(table) == 15625 and table.source == str(default_table_path())
    assert load_table() is table  # no argument: the same cached table
    assert proxy.score(A1, None) == table.lookup(A1, "cifar10_test_200ep")
    assert NB201TableProxy(column="cifar10_test_12ep").score(A1, None) == table.lookup(A1, "cifar10_test_12ep")
    with pytest.raises(ValueError, match="unknown column 'made_up' in .*nb201_results.csv.gz"):
        NB201TableProxy(column="made_up")  # the packaged table is there, so the column is checked at once
    with pytest.raises(ValueError, match="path must be a string"):
        NB201TableProxy(path=None)


def test_packaged_table_is_the_workplace_table(shared_data):
    workplace = shared_data / "nb201" / "nb201_results.csv.gz"
    if not workplace.is_file():
        pytest.skip(f"{workplace} not found")
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (workplace, default_table_path())]
    assert digest[0] == digest[1]


def _uses_the_nb201_table(config) -> bool:
    proxies = [config.reference, *config.baselines.values()]
    return config.sample.strategy == "stratified" or any(isinstance(p, NB201TableProxy) for p in proxies)


NB201_PIPELINES = [p for p in sorted((REPO / "pipelines").glob("*.yaml")) if "nb201_table" in p.read_text()]


def test_some_pipelines_use_the_table():
    assert {p.name for p in NB201_PIPELINES} >= {"nb201_cifar10.yaml", "nb201_cifar10_cpu.yaml"}


@pytest.mark.parametrize("path", NB201_PIPELINES, ids=lambda p: p.name)
def test_table_pipelines_load_and_find_their_table_without_shared_data(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a cwd with no ../shared beside it
    assert not (tmp_path.parent / "shared").exists()
    config = load_config(path)
    assert _uses_the_nb201_table(config)
    assert "../shared" not in path.read_text()
    tables = [p.path for p in (config.reference, *config.baselines.values()) if isinstance(p, NB201TableProxy)]
    if config.sample.strategy == "stratified":
        tables.append(config.sample.table)
    assert tables
    for table in tables:
        assert resolve_table_path(table).is_file(), table
        assert len(load_table(table)) == 15625
