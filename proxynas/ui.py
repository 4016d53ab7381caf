"""``proxynas ui``: the MLflow UI on the project's store, or optuna-dashboard on its ledger.

What a user would otherwise assemble by hand (``mlflow server
--backend-store-uri ...``, then finding the experiment, its runs table and its
metric columns) is one command: the server runs as a child process on the
store, the command waits until it answers and prints the page to open -- the
runs table of the experiment with its rank metrics as columns
(:func:`proxynas.tracking.runs_table_url`) -- and Ctrl-C (or SIGTERM) stops
the server with everything it started.

Bad input is a one-line :class:`~proxynas.errors.ConfigError` before anything
starts: a store or ledger that does not exist yet, an experiment the store
lacks, a port in use, optuna-dashboard not installed.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from proxynas.errors import ConfigError
from proxynas.storage import sqlite_path

#: default ports: MLflow's and optuna-dashboard's own
MLFLOW_PORT, OPTUNA_PORT = 5000, 8080
#: how long a server may take to answer once started (seconds): MLflow's server imports its
#: whole app before it listens, which takes tens of seconds on a slow, busy machine
READY_TIMEOUT = 300.0
#: how long a server gets to stop after SIGTERM before it is killed (seconds)
STOP_TIMEOUT = 15.0
OPTUNA_INSTALL = "pip install 'proxynas[ui]' (or pip install optuna-dashboard)"
#: optuna-dashboard has no ``python -m`` entry point; ``run_server`` is its public API
_OPTUNA_MAIN = ("import sys, optuna_dashboard; "
                "optuna_dashboard.run_server(sys.argv[1], host=sys.argv[2], port=int(sys.argv[3]))")


def _bases(host: str, port: int) -> tuple[str, str]:
    """``(for the user, for polling)``: the server's base URL as a browser and as this process reach it.

    A wildcard address is this machine (``localhost`` to the user); polling
    goes to 127.0.0.1, which every such server listens on. IPv6 in brackets.
    """
    wildcard = host in ("", "0.0.0.0", "::")
    shown = "localhost" if wildcard else f"[{host}]" if ":" in host else host
    polled = "127.0.0.1" if wildcard or host == "localhost" else shown
    return f"http://{shown}:{port}", f"http://{polled}:{port}"


def check_port(host: str, port: int) -> None:
    """ConfigError unless a server can listen on ``host:port`` now."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port; use one from 1024 to 65535, e.g. --port {MLFLOW_PORT}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror}); "
                          "use --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface)") from None
    with socket.socket(family, kind, proto) as probe:
        # as the servers do: a port whose last connections are closing (TIME_WAIT) is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use (another server? an earlier proxynas ui?); "
                                  f"pass a free one, e.g. --port {port + 1}, or stop what listens there") from None
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
                              "use --host 127.0.0.1, or a --port above 1023") from None


def _existing_sqlite(url: str, option: str, what: str, fix: str) -> None:
    """ConfigError if ``url`` is a local sqlite file that does not exist yet: a UI on it would show nothing."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"{option} {url}: no {what} at {path} (nothing recorded there yet); {fix}")


class Server:
    """A server running as a child process in its own session, with its output in a log file.

    Its own session, so stopping it stops what it started too (``mlflow server``
    runs uvicorn as a child of its own), and Ctrl-C in a terminal reaches only
    this process, which then stops the server in order.
    """

    def __init__(self, name: str, command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            self.process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            env={**os.environ, **(env or {})})

    def last_line(self) -> str:
        """The last line of the log that says something (a traceback's last line is its error)."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return next((line.strip() for line in reversed(lines) if line.strip()), "(no output)")

    def wait_ready(self, url: str, timeout: float = READY_TIMEOUT) -> None:
        """Return once ``url`` answers; ConfigError if the server exits or stays silent first."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise ConfigError(f"{self.name} exited ({code}) before it answered: {self.last_line()}; "
                                  f"full output in {self.log}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # it answers, if not to us (e.g. a Host header MLflow does not allow): up
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"{self.name} did not answer {url} within {timeout:.0f} s; "
                                  f"see {self.log}, and try again on a less busy machine")
            time.sleep(0.25)

    def stop(self) -> int:
        """Stop the server and everything it started (SIGTERM, then SIGKILL); its exit status."""
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # the session may outlive its leader: uvicorn's workers, a reloader
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.process.returncode


def _serve(start: Callable[[], Server], ready_url: str, page: str, what: str) -> int:
    """Start a server, wait for it, print ``page``, and keep it running until Ctrl-C or SIGTERM; the exit code."""
    handlers = {}

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, a service manager) and SIGHUP (the terminal closed) must stop the
        # server too: by default they would end this process and leave it running
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                handlers[sig] = signal.signal(sig, interrupt)
    try:
        server = start()  # after the handlers: a SIGTERM from now on stops it
        try:
            server.wait_ready(ready_url)
            print(what, flush=True)
            print(f"  {page}", flush=True)
            print(f"server log: {server.log}; Ctrl-C stops it", file=sys.stderr, flush=True)
            code = server.process.wait()
        except KeyboardInterrupt:
            server.stop()
            print(f"stopped {server.name}", file=sys.stderr)
            return 0
        except BaseException:
            server.stop()
            raise
        print(f"error: {server.name} stopped by itself ({code}): {server.last_line()}; "
              f"full output in {server.log}", file=sys.stderr)
        server.stop()
        return 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _log_path(url: str, name: str) -> Path:
    """Where a server on the database ``url`` logs: beside a local database, else in the temp folder."""
    path = sqlite_path(url)
    folder = path.parent if path is not None else Path(tempfile.gettempdir())
    return folder / name


def mlflow_ui(tracking_uri: str, experiment: str, *, host: str = "127.0.0.1", port: int = MLFLOW_PORT) -> int:
    """Serve the MLflow UI on the store at ``tracking_uri`` and print the runs table of ``experiment``.

    The experiment is tagged as model training on the way (see
    :func:`proxynas.tracking.open_experiment`), so a store written before
    proxynas tagged its experiments opens on the right pages too.
    """
    from proxynas.tracking import artifact_root, open_experiment, runs_table_url

    option = "--tracking-uri"
    if tracking_uri.startswith(("http://", "https://")):
        raise ConfigError(f"{option} {tracking_uri} is a tracking server already: open it in a browser, "
                          "or pass the store it serves, e.g. --tracking-uri sqlite:///PATH/mlflow.db")
    _existing_sqlite(tracking_uri, option, "MLflow store",
                     "run `proxynas run PIPELINE` first, or pass the --tracking-uri your runs used")
    check_port(host, port)
    client, experiment_id = open_experiment(tracking_uri, experiment, option, create=False)
    if experiment_id is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise ConfigError(f"{option} {tracking_uri} has no experiment {experiment!r} (it has: {names}); "
                          "run `proxynas run PIPELINE` first, or pass --experiment NAME")
    tags = client.get_experiment(experiment_id).tags
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    root = artifact_root(tracking_uri)
    if root:  # experiments made in the UI keep their artifacts beside the database too
        command += ["--default-artifact-root", root]
    print(f"starting the MLflow UI on {tracking_uri} at {host}:{port} ...", file=sys.stderr, flush=True)
    log = _log_path(tracking_uri, "mlflow-ui.log")
    # job execution runs GenAI judges in extra processes; proxynas has none to run
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    shown, polled = _bases(host, port)
    page = runs_table_url(shown, experiment_id, tags)
    what = f"MLflow UI: runs of experiment {experiment!r} ({tracking_uri}), rank metrics as columns:"
    return _serve(lambda: Server("the MLflow server", command, log, env), f"{polled}/health", page, what)


def optuna_ui(storage: str, *, host: str = "127.0.0.1", port: int = OPTUNA_PORT) -> int:
    """Serve optuna-dashboard on the Optuna storage ``storage`` (the ledger, search and tuning studies)."""
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise ConfigError(f"--optuna needs optuna-dashboard, which is not installed; {OPTUNA_INSTALL}")
    from proxynas.config.pipeline import check_storage_url

    option = "--storage"
    check_storage_url(storage, option)  # its form and driver
    _existing_sqlite(storage, option, "Optuna storage",
                     "run `proxynas run PIPELINE` (or search, tune) first, or pass the --storage they used")
    check_port(host, port)
    print(f"starting optuna-dashboard on {storage} at {host}:{port} ...", file=sys.stderr, flush=True)
    command = [sys.executable, "-c", _OPTUNA_MAIN, storage, host, str(port)]
    log = _log_path(storage, "optuna-dashboard.log")
    shown, polled = _bases(host, port)
    what = f"optuna-dashboard: studies of {storage}:"
    return _serve(lambda: Server("optuna-dashboard", command, log), f"{polled}/api/studies", f"{shown}/dashboard", what)
