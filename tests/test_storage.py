"""Local sqlite databases: folders made, unusable files named with the fix, one opener at a time."""

import multiprocessing
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from proxynas.errors import ConfigError
from proxynas.storage import check_sqlite, prepare_sqlite, sqlite_error, sqlite_errors, sqlite_lock, sqlite_path

CTX = multiprocessing.get_context("fork")


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


# -- check_sqlite: cheap, before any stage -----------------------------------


def _one_line_error(fn, *match):
    with pytest.raises(ConfigError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for text in match:
        assert text in message, message
    return message


def test_check_accepts_a_new_an_empty_and_an_intact_database(tmp_path):
    check_sqlite(f"sqlite:///{tmp_path / 'new' / 'x.db'}")  # creates the folder, not the file
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "x.db").exists()
    (tmp_path / "empty.db").touch()
    check_sqlite(f"sqlite:///{tmp_path / 'empty.db'}")
    sqlite3.connect(tmp_path / "ok.db").execute("create table t (x)").connection.commit()
    check_sqlite(f"sqlite:///{tmp_path / 'ok.db'}")
    check_sqlite("postgresql://u@h/db")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".probe")] == []  # the probe is gone


def test_a_folder_or_garbage_in_place_of_the_database_is_named_with_the_fix(tmp_path):
    (tmp_path / "dir.db").mkdir()
    _one_line_error(lambda: check_sqlite(f"sqlite:///{tmp_path / 'dir.db'}", "run.ledger", "pick a file"),
                    "run.ledger sqlite:///", "dir.db is a folder, not a database file; pick a file")
    garbage = tmp_path / "g.db"
    garbage.write_bytes(b"\x00\xff" * 3000)
    _one_line_error(lambda: check_sqlite(f"sqlite:///{garbage}", "run.ledger"),
                    f"{garbage} is not a readable SQLite database", f"mv {garbage} {garbage}.corrupt", "delete it")


def _unwritable_checks(tmp_path):
    locked = tmp_path / "locked"
    readonly = tmp_path / "ro.db"
    _one_line_error(lambda: check_sqlite(f"sqlite:///{locked / 'x.db'}", "run.ledger"),
                    f"cannot write in folder {locked}", "choose a writable path")
    _one_line_error(lambda: check_sqlite(f"sqlite:///{readonly}", "run.ledger"), f"cannot write {readonly}")
    hidden = tmp_path / "hidden"  # a folder we may not even look into
    _one_line_error(lambda: check_sqlite(f"sqlite:///{hidden / 'x.db'}", "run.ledger"), f"cannot write in folder {hidden}")


def test_an_unwritable_folder_or_file_is_a_one_line_error(tmp_path):
    if os.geteuid() == 0:  # the unprivileged child below must reach the folder: pytest's tmp is 0700
        import tempfile

        tmp_path = Path(tempfile.mkdtemp(prefix="proxynas-unwritable-", dir="/tmp"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    readonly = tmp_path / "ro.db"
    sqlite3.connect(readonly).execute("create table t (x)").connection.commit()
    readonly.chmod(0o444)
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden").chmod(0o000 if os.geteuid() != 0 else 0o700)
    tmp_path.chmod(0o777)  # writable for anyone: only the file itself is read-only
    try:
        if os.geteuid() != 0:
            _unwritable_checks(tmp_path)
            return
        # root writes anywhere: run the checks as an unprivileged user in a child process
        import pwd

        nobody = pwd.getpwnam("nobody")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                _unwritable_checks(tmp_path)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the checks failed as user nobody"
    finally:
        locked.chmod(0o700)
        (tmp_path / "hidden").chmod(0o700)
        if os.geteuid() == 0:
            shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's sysfs, where no one creates files")
def test_a_folder_no_one_may_write_is_a_one_line_error_even_for_root():
    _one_line_error(lambda: check_sqlite("sqlite:////sys/kernel/proxynas-test.db", "run.ledger"),
                    "cannot write in folder /sys/kernel")


# -- sqlite_errors: what only opening the file reveals --------------------------
def test_sqlite_failures_behind_other_exceptions_become_one_line_errors(tmp_path):
    garbage = tmp_path / "g.db"
    garbage.write_bytes(b"not a database" * 500)
    url = f"sqlite:///{garbage}"

    def open_garbage():  # as MLflow does: its own exception, the driver's as the cause
        try:
            sqlite3.connect(garbage).execute("select * from sqlite_master").fetchall()
        except sqlite3.DatabaseError as exc:
            raise RuntimeError("store failed") from exc

    def run():
        with sqlite_errors(url, "run.tracking_uri", "fix it"):
            open_garbage()

    _one_line_error(run, "run.tracking_uri sqlite:///", "is not a readable SQLite database", "move it aside")
    with pytest.raises(KeyError):  # anything else passes unchanged
        with sqlite_errors(url):
            raise KeyError("x")
    assert sqlite_error(ValueError("x"), url) is None
    readonly = sqlite3.OperationalError("attempt to write a readonly database")
    assert "cannot write" in str(sqlite_error(readonly, url, "run.ledger", "fix it"))


# -- sqlite_lock: one opener at a time, never blocked by a dead one ----------------
def _hold(url, ready):
    with sqlite_lock(url):
        ready.set()
        time.sleep(600)


def test_the_lock_waits_for_a_live_holder_and_not_for_a_killed_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    ready = CTX.Event()
    holder = CTX.Process(target=_hold, args=(url, ready))
    holder.start()
    try:
        assert ready.wait(30)
        _one_line_error(lambda: sqlite_lock(url, timeout=0.3).__enter__(), "another process is still opening")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    with sqlite_lock(url, timeout=0.3):  # the killed holder's lock is gone: taken at once, no timeout error
        pass
    assert (tmp_path / "x.db.lock").exists() and not (tmp_path / "x.db").exists()
    with sqlite_lock("postgresql://u@h/db"):  # nothing to lock
        pass
