"""Any image dataset laid out as ``root/{train,test}/<class>/<image>``.

This is the format users already have (and how the shared CIFAR-10 JPEG copy
unpacks), so bringing a new dataset needs no code: point ``data.root`` at it.
``root`` may also be a ``.tar``/``.tar.gz`` archive of that layout, read
without unpacking (the shared CIFAR-10 copy is such an archive).
All images are decoded once into memory, because proxies train many networks
for many epochs on the same small images and re-decoding would dominate.
"""

from __future__ import annotations

import io
import lzma
import os
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch

from proxynas.data.base import DATASETS, DatasetSource, check_classes, make_splits, stratified_split
from proxynas.data.types import DatasetSplits
from proxynas.errors import DataError
from proxynas.fields import checked

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
_LAYOUT = "train/<class>/*.jpg and test/<class>/*.jpg"
_CHUNK = 512  # images per thread-pool task: large enough to amortise scheduling


@DATASETS.register("imagefolder")
@dataclass(frozen=True)
class ImageFolder(DatasetSource):
    """Images under ``root/train/<class>/`` and ``root/test/<class>/``.

    Classes are the sorted sub-folders of ``train/`` (hidden folders ignored) and
    ``test/`` must hold the same ones. Every image is converted to RGB, so
    grayscale and colour files can be mixed (a grayscale dataset becomes three
    equal channels, which costs memory but never a shape mismatch). Without
    ``image_size`` all images must already share one size; with it each one is
    resized (bilinear) to ``image_size`` x ``image_size``. ``workers`` > 0 decodes
    with that many threads (Pillow releases the GIL while decoding).
    """

    name: ClassVar[str] = "imagefolder"

    root: str = ""
    image_size: int | None = checked(None, ge=1)
    workers: int = checked(0, ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.root:
            raise ValueError(f"root must be set to a folder holding {_LAYOUT}")

    def load(self) -> DatasetSplits:
        root = Path(self.root).expanduser()
        if root.is_file():
            root = _TarTree(root)  # a DataError naming the fix if it is no readable tar archive
        elif not root.is_dir():
            raise DataError(
                f"dataset folder {root} does not exist; set data.root to a folder (or .tar.gz) holding {_LAYOUT}"
            )
        train_files = _list_split(root, "train")
        test_files = _list_split(root, "test")
        classes = tuple(sorted(train_files))
        for cls in sorted(test_files):
            if cls not in train_files:
                raise DataError(
                    f"class {cls!r} has no images in the train split of {root}; "
                    "every class needs images in train/ and test/"
                )

        train_paths, y_all = _flatten(train_files, classes)
        test_paths, y_test = _flatten(test_files, classes)
        check_classes(y_test, classes, "test", where=str(root))  # before the slow decoding

        x_all = _decode_all(train_paths, self.image_size, self.workers)
        test = (_decode_all(test_paths, self.image_size, self.workers), y_test)
        if x_all.shape[1:] != test[0].shape[1:]:
            raise DataError(
                f"train images of {root} are {tuple(x_all.shape[2:])} but test images are "
                f"{tuple(test[0].shape[2:])}; set data.image_size to resize them to one size"
            )
        train, val = stratified_split(x_all, y_all, self.val_fraction, self.seed)
        info = {"source": str(root), "seed": self.seed, "image_size": self.image_size}
        return make_splits(self.name, train, val, test, classes, info)


class _TarTree:
    """A tar archive of the ImageFolder layout, read into memory once, behaving like a Path.

    Only the few Path operations the loader uses are provided: ``/``, ``is_dir``,
    ``read_bytes`` and listing through :func:`_scan`. A single top-level folder
    (``cifar10/train/...``) is skipped so both archive styles work.
    """

    def __init__(self, archive: Path, files: dict[str, bytes] | None = None, prefix: str = "") -> None:
        self.archive = archive
        if files is None:
            files = _read_archive(archive)
            tops = {name.split("/", 1)[0] for name in files}
            if "train" not in tops and len(tops) == 1:
                prefix = tops.pop()
        self.files = files
        self.prefix = prefix

    def __truediv__(self, name: str) -> "_TarTree":
        return _TarTree(self.archive, self.files, f"{self.prefix}/{name}".lstrip("/"))

    def __str__(self) -> str:
        return f"{self.archive}:{self.prefix}" if self.prefix else str(self.archive)

    @property
    def name(self) -> str:
        return self.prefix.rsplit("/", 1)[-1]

    def is_dir(self) -> bool:
        start = f"{self.prefix}/"
        return any(name.startswith(start) for name in self.files)

    def read_bytes(self) -> bytes:
        return self.files[self.prefix]

    def children(self) -> tuple[list[str], list[str]]:
        """(sub-folder names, file names) directly below this folder."""
        start = f"{self.prefix}/"
        dirs, files = set(), set()
        for name in self.files:
            if name.startswith(start):
                rest = name[len(start) :]
                (dirs if "/" in rest else files).add(rest.split("/", 1)[0])
        return sorted(dirs), sorted(files)


def _read_archive(archive: Path) -> dict[str, bytes]:
    """``{member path: bytes}`` of every file in tar archive ``archive`` (DataError if unreadable)."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.isfile():
                    files[member.name.lstrip("./")] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError) as exc:
        if isinstance(exc, PermissionError):
            raise DataError(f"cannot read data.root {archive} (permission denied); fix its permissions") from None
        name = archive.name.lower()
        looks_like_tar = name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"))
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if detail.startswith("file could not be opened successfully"):
            detail = "neither a gzip, bzip2 or xz compressed nor a plain tar file"
        fix = ("copy or download it again (or re-create it: tar -czf data.tar.gz train test),"
               " or set data.root to the unpacked folder")
        if files or isinstance(exc, EOFError) or "unexpected end" in detail:
            raise DataError(f"archive {archive} is truncated or corrupt ({detail}); {fix}") from None
        if looks_like_tar:
            raise DataError(f"{archive} is not a tar archive or is corrupt ({detail}); {fix}") from None
        raise DataError(
            f"data.root {archive} is a file, not a folder or a .tar/.tar.gz archive; set data.root to a folder"
            f" (or a tar archive of one) holding {_LAYOUT}"
        ) from None
    return files


def _scan(folder) -> tuple[list[str], list[str]]:
    """(sub-folder names, file names) of a real folder or a folder inside a tar archive."""
    if isinstance(folder, _TarTree):
        return folder.children()
    with os.scandir(folder) as entries:
        entries = list(entries)
    return (
        sorted(e.name for e in entries if e.is_dir()),
        sorted(e.name for e in entries if e.is_file()),
    )


def _flatten(files: dict[str, list[Path]], classes: Sequence[str]) -> tuple[list[Path], torch.Tensor]:
    """All paths of one split in class order, with their labels."""
    paths: list[Path] = []
    labels: list[int] = []
    for k, cls in enumerate(classes):
        class_paths = files.get(cls, [])
        paths.extend(class_paths)
        labels.extend([k] * len(class_paths))
    return paths, torch.tensor(labels, dtype=torch.int64)


def _list_split(root: Path, split: str) -> dict[str, list[Path]]:
    """``{class: sorted image paths}`` of ``root/split``; every class folder must hold images."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{root} has no {split}/ folder; the dataset must be laid out as {_LAYOUT}")
    class_dirs = [d for d in _scan(split_dir)[0] if not d.startswith(".")]
    if not class_dirs:
        raise DataError(f"{split_dir} has no class folders; put each class's images in {split_dir}/<class>/")
    files: dict[str, list[Path]] = {}
    for cls in class_dirs:
        folder = split_dir / cls
        names = [n for n in _scan(folder)[1] if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        if not names:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images to it or remove the folder"
            )
        files[cls] = [folder / n for n in names]
    return files


def _decode_one(path: Path, size: int | None) -> np.ndarray:
    """One image as an RGB uint8 ``[H, W, 3]`` array (resized if ``size`` is set)."""
    from PIL import Image

    try:
        # One read() per file: Pillow reading a path issues dozens of small reads.
        with Image.open(io.BytesIO(path.read_bytes())) as im:
            if im.mode != "RGB":
                im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for corrupt files
        raise DataError(f"cannot decode image {path} ({exc}); remove or replace the file") from None


def _decode_all(paths: Sequence[Path], size: int | None, workers: int) -> torch.Tensor:
    """Decode ``paths`` into one uint8 tensor ``[N, 3, H, W]``.

    Images are written straight into one preallocated array, so peak memory is
    the dataset plus one image per thread, not a list of 60k small arrays.
    """
    first = _decode_one(paths[0], size)
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)
    out[0] = first

    def fill(start: int, stop: int) -> None:
        for i in range(start, stop):
            img = _decode_one(paths[i], size)
            if img.shape != first.shape:
                raise DataError(
                    f"image {paths[i]} is {img.shape[1]}x{img.shape[0]} but {paths[0]} is "
                    f"{first.shape[1]}x{first.shape[0]}; set data.image_size to resize all images to one size"
                )
            out[i] = img

    ranges = [(s, min(s + _CHUNK, len(paths))) for s in range(1, len(paths), _CHUNK)]
    if workers == 0:
        for start, stop in ranges:
            fill(start, stop)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(fill, s, e) for s, e in ranges]:
                future.result()  # re-raises the first DataError
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
