import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: why a test that needs the workplace's CIFAR-10 copy is skipped in a plain clone
NO_SHARED_DATA = "../shared/data not found (a plain clone has none): CIFAR-10 tests need it; set PROXYNAS_SHARED_DATA"


def shared_data_dir() -> Path:
    """The workplace's reference data (``../shared/data`` beside the checkout, or ``$PROXYNAS_SHARED_DATA``)."""
    return Path(os.environ.get("PROXYNAS_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "shared_data: uses the workplace's ../shared/data (set on every test that asks for it)")


def pytest_collection_modifyitems(config, items):
    # CI runs the suite once from a plain clone (no ../shared), then only these in the checkout: the marker
    # is derived from the fixture, so a new test that needs the shared data cannot be left out of that run.
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The workplace's data folder (CIFAR-10 archive); the test is skipped where there is none."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(NO_SHARED_DATA)
    return path


@pytest.fixture(scope="session")
def nb201_csv() -> Path:
    """The NB201 results table shipped inside the package (always there)."""
    from proxynas.reference import default_table_path

    return default_table_path()


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server URL: ``$PROXYNAS_TEST_POSTGRES``, or a throwaway local server for the session."""
    import shutil
    import tempfile

    from tests.postgres import LocalPostgres

    given = os.environ.get("PROXYNAS_TEST_POSTGRES")
    if given:
        yield given
        return
    root = Path(tempfile.mkdtemp(prefix="proxynas-pg-"))  # under /tmp: the postgres user can reach it
    root.chmod(0o755)
    server = LocalPostgres(root / "pg")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def postgres_url(postgres_server, request):
    """A fresh database per test on the shared server."""
    import sqlalchemy

    name = "t_" + re.sub(r"[^a-z0-9_]", "_", f"{request.module.__name__}_{request.node.name}".lower())[-55:]
    engine = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"
