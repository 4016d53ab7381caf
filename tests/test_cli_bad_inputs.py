"""Every bad input is one line ``error: <problem>; <fix>`` with exit code 2, found before expensive work.

Each case calls :func:`proxynas.cli.main` in-process, as a user would run the
command, on tiny settings; a case that reaches a stage would show a
``[i/n] stage ...`` progress line on stderr and create the stage cache.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from proxynas.cli import main

from tests.quickstart import QUICKSTART, TINY


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _archive(path: Path) -> bytes:
    """A valid ``.tar.gz`` of the ImageFolder layout (3 classes, 4 tiny PNGs per class and split)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in ("a", "b", "c"):
                for i in range(4):
                    png = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(png, "PNG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{i}.png")
                    info.size = png.tell()
                    png.seek(0)
                    tar.addfile(info, png)
    return path.read_bytes()


def _write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _truncated_tar(tmp: Path) -> Path:
    data = _archive(tmp / "good.tar.gz")
    return _write(tmp, "truncated.tar.gz", data[: len(data) // 2])


# Each case: (argv builder over tmp_path, words the message must hold, whether the data stage may run)
# ``{Q}`` is the quickstart pipeline; the tiny settings and a private cache/ledger are appended.
CASES = {
    # 1. a pipeline file whose top level is a list
    "yaml-top-level-list": (
        lambda t: ["run", str(_write(t, "list.yaml", "- run\n- data\n"))],
        ["top level", "must be a mapping", "got a list"], False,
    ),
    "yaml-top-level-scalar": (
        lambda t: ["run", str(_write(t, "scalar.yaml", "just words\n"))],
        ["top level", "must be a mapping"], False,
    ),
    "yaml-section-not-a-mapping": (
        lambda t: ["run", str(_write(t, "section.yaml", "run: 5\n"))],
        ["run is the value int 5, not a section", "make run a mapping"], False,
    ),
    # 2. a truncated, a garbage and a non-archive data.root
    "data-root-truncated-tar-gz": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--set", f"data={{name: imagefolder, root: {_truncated_tar(t)}}}"],
        ["truncated or corrupt", "truncated.tar.gz", "copy or download it again"], True,
    ),
    "data-root-garbage-tar-gz": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--set",
                   f"data={{name: imagefolder, root: {_write(t, 'garbage.tar.gz', b'not a tarball' * 50)}}}"],
        ["garbage.tar.gz is not a tar archive or is corrupt", "copy or download it again"], True,
    ),
    "data-root-plain-file": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--set",
                   f"data={{name: imagefolder, root: {_write(t, 'notes.txt', 'hello')}}}"],
        ["is a file, not a folder or a .tar/.tar.gz archive", "set data.root to a folder"], True,
    ),
    # 3. --jobs below 1, or not a number
    "jobs-zero": (lambda t: ["run", "{Q}", "--no-mlflow", "--jobs", "0"], ["--jobs must be >= 1", "got 0"], False),
    "jobs-negative": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--jobs", "-2"], ["--jobs must be >= 1", "got -2"], False,
    ),
    "jobs-not-a-number": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--jobs", "two"], ["--jobs", "invalid int", "--help"], False,
    ),
    # 4. malformed YAML: the message locates it
    "yaml-syntax-line-column": (
        lambda t: ["run", str(_write(t, "broken.yaml", "run:\n  name: x\n  bad: [1, 2\n"))],
        ["not valid YAML", "line 4, column 1", "starts at line 3, column 8", "fix the file"], False,
    ),
    "yaml-tab-indent": (
        lambda t: ["run", str(_write(t, "tab.yaml", "run:\n\tname: x\n"))],
        ["not valid YAML", "line 2, column 1", "tab"], False,
    ),
    # 5. a number that is not one is still refused as a string (1e6 itself is accepted: see below)
    "override-not-a-number": (
        lambda t: ["run", "{Q}", "--set", "proxy.lr=1e6x"], ["proxy.lr: expected a number", "'1e6x'"], False,
    ),
    # 6. a missing sample.table is blamed on sample.table, before the data is loaded
    "missing-sample-table": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--set", "sample.strategy=stratified",
                   "--set", f"sample.table={t / 'nope.csv'}"],
        ["sample.table", "nope.csv", "not found", "leave it empty"], False,
    ),
    # 7. storage URLs are checked before any stage runs
    "search-unknown-storage-scheme": (
        lambda t: ["search", "{Q}", "--no-mlflow", "--trials", "2", "--storage", "bogus://x"],
        ["--storage 'bogus://x' names an unknown database 'bogus'", "sqlite:///"], False,
    ),
    "search-storage-not-a-url": (
        lambda t: ["search", "{Q}", "--no-mlflow", "--trials", "2", "--storage", "study.db"],
        ["--storage 'study.db' is not a database URL", "sqlite:///path.db"], False,
    ),
    "search-sqlite-folder-is-a-file": (
        lambda t: ["search", "{Q}", "--no-mlflow", "--trials", "2", "--storage",
                   f"sqlite:///{_write(t, 'afile', 'x')}/sub/study.db"],
        ["--storage", "afile is a file", "choose another path"], False,
    ),
    "search-missing-driver": (
        lambda t: ["search", "{Q}", "--no-mlflow", "--trials", "2", "--storage", "mysql://u:secret@host/db"],
        ["needs the Python module 'MySQLdb'", "pip install 'mysqlclient'", "u:***@host"], False,
    ),
    "tune-unknown-storage-scheme": (
        lambda t: ["tune", "{Q}", "--no-mlflow", "--set", "tune.params={proxy.epochs: {choices: [1, 2]}}",
                   "--set", "tune.calibration=3", "--set", "tune.holdout=3", "--set", "tune.trials=1",
                   "--storage", "postgres://u@host/db"],
        ["--storage 'postgres://u@host/db' names an unknown database 'postgres'", "write postgresql://"], False,
    ),
    "worker-bad-ledger": (
        lambda t: ["worker", "{Q}", "--no-mlflow", "--set", "tune.params={proxy.epochs: {choices: [1, 2]}}",
                   "--set", "tune.calibration=3", "--set", "tune.holdout=3", "--set", "run.ledger=ledger.db"],
        ["run: ledger 'ledger.db' is not a database URL"], False,
    ),
    "run-storage-folder": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--set", f"run.storage=sqlite:///{t}"],
        ["run.storage", "is a folder", "name a database file in it"], False,
    ),
    # 8. unwritable output paths, checked before anything is computed
    "cache-dir-unwritable": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--cache-dir", f"{_write(t, 'afile', 'x')}/cache"],
        ["cache folder", "afile/cache is not writable", "choose another with --cache-dir"], False,
    ),
    "ledger-unwritable": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--set", f"run.ledger=sqlite:///{_write(t, 'afile', 'x')}/l.db"],
        ["run.ledger", "afile", "point it at a writable file"], False,
    ),
    "tracking-uri-unwritable": (
        lambda t: ["run", "{Q}", "--tracking-uri", f"sqlite:///{_write(t, 'afile', 'x')}/mlflow.db"],
        ["run.tracking_uri (--tracking-uri)", "afile", "--tracking-uri sqlite:///"], False,
    ),
    "tune-storage-unwritable": (
        lambda t: ["tune", "{Q}", "--no-mlflow", "--set", "tune.params={proxy.epochs: {choices: [1, 2]}}",
                   "--set", "tune.calibration=3", "--set", "tune.holdout=3", "--set", "tune.trials=1",
                   "--storage", f"sqlite:///{_write(t, 'afile', 'x')}/study.db"],
        ["--storage", "afile is a file", "choose another path"], False,
    ),
    # 9. corrupted databases
    "ledger-corrupted": (
        lambda t: ["run", "{Q}", "--no-mlflow", "--set",
                   f"run.ledger=sqlite:///{_write(t, 'bad-ledger.db', b'garbage!' * 600)}"],
        ["run.ledger", "bad-ledger.db is not a readable SQLite database", "move it aside"], False,
    ),
    "mlflow-db-corrupted": (
        lambda t: ["run", "{Q}", "--tracking-uri", f"sqlite:///{_write(t, 'bad-mlflow.db', b'garbage!' * 600)}"],
        ["run.tracking_uri (--tracking-uri)", "bad-mlflow.db is not a readable SQLite database", "move it aside"],
        False,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_with_exit_code_2_before_expensive_work(case, tmp_path, capsys):
    build, words, data_stage_runs = CASES[case]
    argv = [str(QUICKSTART) if a == "{Q}" else a for a in build(tmp_path)]
    cache, ledger = tmp_path / "cache", tmp_path / "ledger.db"
    private = [f"run.cache_dir={cache}", f"run.ledger=sqlite:///{ledger}",
               f"run.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"]
    extra = [o for o in private if o.split("=")[0] not in " ".join(argv)]  # a case's own run.* setting wins
    code = main(argv + _sets(TINY + extra))
    captured = capsys.readouterr()

    assert code == 2, captured
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    message = errors[0]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert ";" in message  # problem; fix
    if data_stage_runs:
        # only the data stage ran (it is what reads data.root); nothing after it
        progress = [line for line in lines if line != message]
        assert progress and all(" load_data " in line for line in progress), lines
    else:
        assert lines == [message]  # no stage progress at all
        # no stage ran (the cache folder, checked writable first, is empty), no database was opened
        assert not (cache.exists() and any(cache.iterdir())) and not ledger.exists()


def test_exponent_numbers_are_floats_in_overrides_and_pipeline_files(tmp_path, capsys):
    """YAML 1.1 reads ``1e6`` as a string; proxynas reads it as the number everyone means."""
    assert main(["config", str(QUICKSTART), "--set", "proxy.lr=1e6", "--set", "reference.lr=2.5E-3"]) == 0
    out = capsys.readouterr().out
    assert "lr: 1000000.0" in out and "lr: 0.0025" in out
    text = "proxy: {name: train, lr: 1e-3, epochs: 3}\nreference:\n  name: train\n  lr: 5e2\n"
    pipeline = _write(tmp_path, "exp.yaml", text)
    assert main(["config", str(pipeline)]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.001" in out and "lr: 500.0" in out
