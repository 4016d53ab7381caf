import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: why a test that needs the workplace's CIFAR-10 copy is skipped in a plain clone
NO_SHARED_DATA = "../shared/data not found (a plain clone has none): CIFAR-10 tests need it; set PROXYNAS_SHARED_DATA"


def shared_data_dir() -> Path:
    """The workplace's reference data (``../shared/data`` beside the checkout, or ``$PROXYNAS_SHARED_DATA``)."""
    return Path(os.environ.get("PROXYNAS_SHARED_DATA", REPO.parent / "shared" / "data"))


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
