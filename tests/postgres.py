"""A throwaway PostgreSQL server on 127.0.0.1 for the multi-worker tests.

``make test`` installs Debian's ``postgresql`` when its server binaries are
missing; ``PROXYNAS_TEST_POSTGRES=postgresql://...`` points the tests at a
running server instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path


def server_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """``initdb`` + ``pg_ctl start`` in ``root``; run as the ``postgres`` user when we are root."""

    def __init__(self, root: Path) -> None:
        initdb, pg_ctl = server_bin("initdb"), server_bin("pg_ctl")
        if not (initdb and pg_ctl):
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found; "
                "install them with `apt-get install postgresql` (make test does) "
                "or set PROXYNAS_TEST_POSTGRES=postgresql://user@host/db"
            )
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.root, "postgres")
            os.chmod(self.root, 0o700)
        self._run(self.initdb, "-D", str(self.data), "-U", "proxynas", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        return f"postgresql://proxynas@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
