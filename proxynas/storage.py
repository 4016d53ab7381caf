"""Local database URLs: the one place that makes a ``sqlite:///`` file's folder exist.

The ledger, search and tuning studies (Optuna RDB storage) and the MLflow
store all default to sqlite files under the working directory; SQLAlchemy
cannot create the folder of a database file, so every opener calls
:func:`prepare_sqlite` first.
"""

from __future__ import annotations

from pathlib import Path

from proxynas.errors import ConfigError

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (None for any other URL or an in-memory database)."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    path = url[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def prepare_sqlite(url: str) -> str:
    """Create the folder of a local sqlite database ``url``; returns ``url`` (other URLs untouched)."""
    path = sqlite_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create {path.parent} for database {url} ({exc.strerror or exc}); choose a writable path"
            ) from None
    return url
