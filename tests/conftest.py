import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The workplace's reference data (``../shared/data`` beside the checkout)."""
    return Path(os.environ.get("PROXYNAS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    assert path.is_dir(), f"reference data not found at {path}; set PROXYNAS_SHARED_DATA"
    return path


@pytest.fixture(scope="session")
def nb201_csv(shared_data: Path) -> Path:
    path = shared_data / "nb201" / "nb201_results.csv.gz"
    assert path.is_file(), f"{path} is missing"
    return path
