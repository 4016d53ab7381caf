"""Local database URLs: the one place that prepares, checks and locks a ``sqlite:///`` file.

The ledger, search and tuning studies (Optuna RDB storage) and the MLflow
store all default to sqlite files under the working directory. Three things go
wrong with such a file, and each opener handles them here, the same way:

* SQLAlchemy cannot create the folder of a database file, so every opener calls
  :func:`prepare_sqlite` first;
* an unwritable, misplaced or corrupted file surfaces deep inside SQLAlchemy (and
  MLflow retries a failed open for almost two minutes), so :func:`check_sqlite`
  looks at the file first -- cheap enough to run before any stage -- and
  :func:`sqlite_errors` turns what only opening reveals into the same one-line
  :class:`~proxynas.errors.ConfigError`;
* two processes creating the schema of a fresh file at once collide ("table ...
  already exists"), so openers hold :func:`sqlite_lock` while they open.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from proxynas.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; opening a fresh store at once stays racy there
    fcntl = None  # type: ignore[assignment]

SQLITE_PREFIX = "sqlite:///"
#: the first 16 bytes of every SQLite 3 database file
SQLITE_HEADER = b"SQLite format 3\x00"
#: how long :func:`sqlite_lock` waits for another process opening the same database (seconds);
#: creating MLflow's schema takes a few seconds, so only a hung process holds it this long
LOCK_TIMEOUT = 300.0

# SQLite's primary result codes (https://sqlite.org/rescode.html) that a user fixes by choosing another file
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 3, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_AUTH, _SQLITE_NOTADB = 13, 14, 23, 26
#: the same failures by message, for Python < 3.11 (no ``sqlite_errorcode``)
_SQLITE_MESSAGES = {
    "file is not a database": _SQLITE_NOTADB,
    "database disk image is malformed": _SQLITE_CORRUPT,
    "unable to open database file": _SQLITE_CANTOPEN,
    "attempt to write a readonly database": _SQLITE_READONLY,
    "database or disk is full": _SQLITE_FULL,
    "disk i/o error": _SQLITE_IOERR,
}


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (None for any other URL or an in-memory database)."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    path = url[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def prepare_sqlite(url: str, setting: str = "database", fix: str = "choose a writable path") -> str:
    """Create the folder of a local sqlite database ``url``; returns ``url`` (other URLs untouched).

    ``setting`` names where the URL came from (``run.ledger``) and ``fix`` says what
    to do instead, both for the one-line error.
    """
    path = sqlite_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{setting} {url}: cannot create folder {path.parent} ({_reason(exc)}); {fix}") from None
    return url


def check_sqlite(url: str, setting: str = "database", fix: str = "choose a writable path") -> None:
    """Fail with a one-line :class:`ConfigError` unless a local sqlite ``url`` can be opened for writing.

    Cheap (a folder, a probe file, 16 bytes read), so callers run it before any
    expensive work: the folder is created and must accept new files (SQLite
    writes its journal beside the database), and an existing file must be
    writable and start with SQLite's header -- a file overwritten with other
    bytes is named with the fix (move it aside) instead of failing deep inside
    SQLAlchemy. A file whose header is intact but whose pages are damaged is only
    found by opening it: see :func:`sqlite_errors`. Other URLs are not checked.
    """
    path = sqlite_path(url)
    if path is None:
        return
    prepare_sqlite(url, setting, fix)
    prefix = f"{setting} {url}"
    try:
        is_dir = path.is_dir()
    except OSError as exc:  # a folder we may not even look into
        raise ConfigError(f"{prefix}: cannot write in folder {path.parent} ({_reason(exc)}); {fix}") from None
    if is_dir:
        raise ConfigError(f"{prefix}: {path} is a folder, not a database file; {fix}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{prefix}: cannot write in folder {path.parent} ({_reason(exc)}); {fix}") from None
    try:
        with open(path, "r+b") as fh:  # r+: needs write permission, changes nothing
            header = fh.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return  # a new database: SQLite creates it
    except OSError as exc:
        raise ConfigError(f"{prefix}: cannot write {path} ({_reason(exc)}); {fix}") from None
    if header and header != SQLITE_HEADER:  # an empty file is a valid, empty database
        raise ConfigError(_corrupt_message(prefix, path))


@contextmanager
def sqlite_errors(url: str, setting: str = "database", fix: str = "choose a writable path") -> Iterator[None]:
    """Turn the SQLite failures a user fixes (corrupted, unwritable, full file) into one-line ConfigErrors.

    Wrap the opening of a database in it: whatever :func:`check_sqlite` cannot see
    cheaply (damaged pages behind a good header, a read-only mount) surfaces
    there, wrapped in SQLAlchemy's and MLflow's exceptions. Any other error passes
    unchanged.
    """
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:
        error = sqlite_error(exc, url, setting, fix)
        if error is None:
            raise
        raise error from None


def sqlite_error(
    exc: BaseException, url: str, setting: str = "database", fix: str = "choose a writable path"
) -> ConfigError | None:
    """The one-line ConfigError for a SQLite failure anywhere in ``exc``'s chain (None if there is none)."""
    found = _find_sqlite_error(exc)
    if found is None:
        return None
    code = _sqlite_code(found)
    path = sqlite_path(url)
    where = str(path) if path is not None else url
    prefix = f"{setting} {url}"
    reason = str(found).strip().splitlines()[0] if str(found).strip() else type(found).__name__
    if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        return ConfigError(_corrupt_message(prefix, path) if path is not None
                           else f"{prefix}: the database is corrupted ({reason}); repair or replace it")
    if code in (_SQLITE_CANTOPEN, _SQLITE_READONLY, _SQLITE_PERM, _SQLITE_AUTH):
        return ConfigError(f"{prefix}: cannot write {where} ({reason}); {fix}")
    if code == _SQLITE_FULL:
        return ConfigError(f"{prefix}: the disk holding {where} is full; free space or {fix}")
    if code == _SQLITE_IOERR:
        return ConfigError(f"{prefix}: I/O error on {where} ({reason}); check the disk or {fix}")
    return None


@contextmanager
def sqlite_lock(url: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on ``<database>.lock`` while opening a local sqlite database ``url``.

    SQLite's own locking does not cover creating a schema: two processes that
    both find a fresh file empty both run ``CREATE TABLE``, and the loser fails
    ("table ... already exists"). Openers of one file take turns here instead.
    ``flock`` belongs to the open file, so the kernel releases it when its holder
    dies -- a killed process never blocks the next run. The lock file stays
    beside the database (removing it would let two processes lock different
    files). No-op for other URLs and where ``fcntl`` is missing.
    """
    path = sqlite_path(url)
    if path is None or fcntl is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ConfigError(
            f"cannot create lock file {lock} ({_reason(exc)}); choose a writable path for {url}"
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"waited {timeout:.0f}s for {lock}: another process is still opening {path}; "
                        "stop it (or wait for it) and run again"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _corrupt_message(prefix: str, path: Path) -> str:
    return (
        f"{prefix}: {path} is not a readable SQLite database (corrupted or overwritten); "
        f"move it aside (mv {path} {path}.corrupt) or delete it, and the next run starts a new one"
    )


def _find_sqlite_error(exc: BaseException) -> sqlite3.Error | None:
    """The ``sqlite3`` error behind ``exc``: itself, SQLAlchemy's ``orig``, or a cause/context."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, sqlite3.Error):
            return err
        orig = getattr(err, "orig", None)
        todo += [err.__context__, err.__cause__, orig if isinstance(orig, BaseException) else None]
    return None


def _sqlite_code(err: sqlite3.Error) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)  # Python >= 3.11: the extended result code
    if isinstance(code, int):
        return code & 0xFF
    text = str(err).lower()
    return next((c for msg, c in _SQLITE_MESSAGES.items() if msg in text), None)
