"""The workplace's CIFAR-10 JPEG tarball is where the README says, in ImageFolder layout.

A plain clone has no ``../shared``: then the tarball test is skipped with a
one-line reason (checked here in a subprocess), and a tiny generated archive
of the same layout covers the reader.
"""

import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from PIL import Image

from proxynas.data import ImageFolder

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEMBER = re.compile(r"^(train|test)/(" + "|".join(CLASSES) + r")/\d{4}\.jpg$")


def test_shared_cifar10_tarball_has_imagefolder_layout(shared_data):
    path = shared_data / "cifar10" / "cifar10-jpeg.tar.gz"
    assert path.is_file(), f"{path} is missing"
    files = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:  # streams; stops after a few members instead of reading all 60k
            if member.isfile():
                assert MEMBER.match(member.name), member.name
                files.append(member)
                if len(files) == 1:
                    with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                        assert img.size == (32, 32) and img.mode == "RGB"
                if len(files) == 50:
                    break
            else:
                assert member.isdir() and member.name.rstrip("/") in {"train", "test"} | {
                    f"{split}/{cls}" for split in ("train", "test") for cls in CLASSES
                }, member.name
    assert len(files) == 50


def test_without_shared_data_cifar10_tests_skip_and_table_tests_run(tmp_path):
    """In a plain clone the shared_data fixture skips (one line) and nb201_csv is the packaged table."""
    env = {**os.environ, "PROXYNAS_SHARED_DATA": str(tmp_path / "nowhere")}
    nodes = [
        "tests/data/test_shared_cifar10.py::test_shared_cifar10_tarball_has_imagefolder_layout",
        "tests/reference/test_nb201_table.py::test_lookups_return_the_csv_values",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *nodes],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(r"\b1 passed, 1 skipped\b", out), out
    reason = "../shared/data not found (a plain clone has none): CIFAR-10 tests need it; set PROXYNAS_SHARED_DATA"
    assert re.search(r"^SKIPPED \[1\] tests/data/test_shared_cifar10\.py:\d+: " + re.escape(reason) + "$", out, re.M), out
    assert "error" not in out.lower(), out


def _cifar_like_archive(path: Path, classes=("airplane", "cat", "truck"), n_train=3, n_test=2) -> Path:
    """A tiny tar.gz in the layout of the workplace copy: dir members, ``./``-prefixed names, 32x32 JPEGs."""
    with tarfile.open(path, "w:gz") as tar:
        def add_dir(name):
            info = tarfile.TarInfo(f"./{name}")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)

        for split, n in (("train", n_train), ("test", n_test)):
            add_dir(split)
            for k, cls in enumerate(classes):
                add_dir(f"{split}/{cls}")
                for i in range(n):
                    buf = io.BytesIO()
                    Image.new("RGB", (32, 32), (40 + 80 * k, 200 - 80 * k, 30 * i)).save(buf, "JPEG", quality=75)
                    info = tarfile.TarInfo(f"./{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return path


def test_cifar_like_jpeg_archive_loads_without_shared_data(tmp_path):
    archive = _cifar_like_archive(tmp_path / "cifar-like.tar.gz")
    splits = ImageFolder(root=str(archive), val_fraction=1 / 3).load()
    assert splits.classes == ("airplane", "cat", "truck")
    assert splits.shape == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 3, 6)
    assert torch.bincount(splits.test.y, minlength=3).tolist() == [2, 2, 2]
    assert str(archive) in splits.info["source"]
    pixels = (splits.test.denormalize() * 255).round()
    red = pixels[:, 0, 16, 16]  # JPEG is lossy: the class colour survives to within a few levels
    for label, expected in enumerate((40, 120, 200)):
        assert (red[splits.test.y == label] - expected).abs().max() <= 6
