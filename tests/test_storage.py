import pytest

from proxynas.errors import ConfigError
from proxynas.storage import prepare_sqlite, sqlite_path


def test_sqlite_path_of_urls(tmp_path):
    assert sqlite_path(f"sqlite:///{tmp_path}/a/b.db") == tmp_path / "a" / "b.db"
    assert sqlite_path("sqlite:///rel/x.db?timeout=5") is not None and str(sqlite_path("sqlite:///rel/x.db")) == "rel/x.db"
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://u@h/db") is None and sqlite_path("http://localhost:5000") is None


def test_prepare_creates_the_folder_and_leaves_other_urls_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'x' / 'y' / 'ledger.db'}"
    assert prepare_sqlite(url) == url and (tmp_path / "x" / "y").is_dir()
    assert prepare_sqlite("postgresql://u@h/db") == "postgresql://u@h/db"


def test_an_uncreatable_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="choose a writable path") as info:
        prepare_sqlite(f"sqlite:///{tmp_path / 'file' / 'sub' / 'ledger.db'}")
    assert "\n" not in str(info.value)
