"""ImageFolder on tiny generated trees (3 classes of 8x8 images)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from proxynas.data import ImageFolder
from proxynas.errors import DataError

CLASSES = ("ant", "bee", "cow")
COLOURS = {"ant": (200, 10, 10), "bee": (10, 200, 10), "cow": (10, 10, 200)}


def _write(path: Path, colour, size=8, mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), colour)
    img.putpixel((0, 0), (255, 255, 255))  # a marker to check orientation
    img.convert(mode).save(path)


def make_tree(root: Path, n_train=4, n_test=2, classes=CLASSES) -> Path:
    for cls in classes:
        for i in range(n_train):
            _write(root / "train" / cls / f"{i:04d}.png", COLOURS[cls])
        for i in range(n_test):
            _write(root / "test" / cls / f"{i:04d}.png", COLOURS[cls])
    return root


def _pixels(part) -> np.ndarray:
    return (part.denormalize() * 255).round().to(torch.uint8).numpy()


def test_loads_shapes_labels_and_classes(tmp_path):
    root = make_tree(tmp_path / "ds")
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    splits = ImageFolder(root=str(root)).load()
    assert splits.name == "imagefolder"
    assert splits.classes == CLASSES
    assert splits.shape == (3, 8, 8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 6)  # 1 of 4 per class to val
    for part in (splits.train, splits.val, splits.test):
        assert torch.bincount(part.y, minlength=3).min() >= 1
        pixels = _pixels(part)
        for img, label in zip(pixels, part.y.tolist()):
            assert tuple(img[:, 4, 4]) == COLOURS[CLASSES[label]]  # label matches its folder
            assert tuple(img[:, 0, 0]) == (255, 255, 255)  # CHW, not transposed
    assert splits.train.x.mean(dim=(0, 2, 3)).abs().max() < 1e-5


def test_image_size_resizes_and_workers_give_same_result(tmp_path):
    root = make_tree(tmp_path / "ds")
    _write(root / "train" / "bee" / "big.jpg", COLOURS["bee"], size=16)  # jpeg, other size, resized
    serial = ImageFolder(root=str(root), image_size=4).load()
    threaded = ImageFolder(root=str(root), image_size=4, workers=2).load()
    assert serial.shape == (3, 4, 4)
    assert len(serial.train) + len(serial.val) == 13
    assert torch.equal(serial.train.x, threaded.train.x) and torch.equal(serial.test.y, threaded.test.y)


def test_grayscale_images_become_rgb(tmp_path):
    root = make_tree(tmp_path / "ds")
    _write(root / "train" / "cow" / "gray.png", (90, 90, 90), mode="L")
    splits = ImageFolder(root=str(root)).load()
    assert splits.shape == (3, 8, 8)
    everything = np.concatenate([_pixels(splits.train), _pixels(splits.val)])
    assert any(tuple(img[:, 4, 4]) == (90, 90, 90) for img in everything)


def test_root_is_required():
    with pytest.raises(ValueError, match="root must be set"):
        ImageFolder()
    with pytest.raises(ValueError, match="image_size must be an integer >= 1 or null, got 0"):
        ImageFolder(root="x", image_size=0)
    with pytest.raises(ValueError, match="workers must be an integer >= 0, got -1"):
        ImageFolder(root="x", workers=-1)


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{missing} does not exist; set data.root"):
        ImageFolder(root=str(missing)).load()


def test_missing_test_folder(tmp_path):
    root = make_tree(tmp_path / "ds", n_test=0)
    with pytest.raises(DataError, match=r"has no test/ folder"):
        ImageFolder(root=str(root)).load()


def test_empty_class_folder(tmp_path):
    root = make_tree(tmp_path / "ds")
    empty = root / "train" / "dog"
    empty.mkdir()
    with pytest.raises(DataError, match=f"class folder {empty} holds no images"):
        ImageFolder(root=str(root)).load()


def test_class_missing_from_test(tmp_path):
    root = make_tree(tmp_path / "ds")
    for f in (root / "test" / "cow").iterdir():
        f.unlink()
    (root / "test" / "cow").rmdir()
    with pytest.raises(DataError, match=f"class 'cow' has no images in the test split of {root}; every class"):
        ImageFolder(root=str(root)).load()


def test_class_only_in_test(tmp_path):
    root = make_tree(tmp_path / "ds")
    _write(root / "test" / "elk" / "0000.png", (1, 2, 3))
    with pytest.raises(DataError, match="class 'elk' has no images in the train split"):
        ImageFolder(root=str(root)).load()


def test_mixed_sizes_need_image_size(tmp_path):
    root = make_tree(tmp_path / "ds")
    odd = root / "train" / "cow" / "odd.png"
    _write(odd, COLOURS["cow"], size=5)
    with pytest.raises(DataError, match=f"image {odd} is 5x5 .*set data.image_size"):
        ImageFolder(root=str(root)).load()


def test_corrupt_image(tmp_path):
    root = make_tree(tmp_path / "ds")
    bad = root / "test" / "bee" / "broken.png"
    bad.write_bytes(b"not really a png")
    with pytest.raises(DataError, match=f"cannot decode image {bad}"):
        ImageFolder(root=str(root), workers=2).load()


@pytest.mark.parametrize("top_folder", [False, True])
def test_tar_archive_loads_like_the_folder(tmp_path, top_folder):
    import tarfile

    root = make_tree(tmp_path / "tree")
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(root / split, arcname=f"data/{split}" if top_folder else split)
    from_folder = ImageFolder(root=str(root)).load()
    from_tar = ImageFolder(root=str(archive)).load()
    assert from_tar.classes == from_folder.classes
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(from_tar, split).x, getattr(from_folder, split).x)
        assert torch.equal(getattr(from_tar, split).y, getattr(from_folder, split).y)


def test_tar_archive_with_a_class_missing_from_test(tmp_path):
    import shutil
    import tarfile

    root = make_tree(tmp_path / "tree")
    shutil.rmtree(root / "test" / CLASSES[1])
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    with pytest.raises(DataError, match=f"class '{CLASSES[1]}' has no images in the test split"):
        ImageFolder(root=str(archive)).load()


@pytest.mark.parametrize("cut", ["gz", "tar"])
def test_truncated_archive_says_so(tmp_path, cut):
    import tarfile

    root = make_tree(tmp_path / "tree")
    full = tmp_path / f"full.{'tar.gz' if cut == 'gz' else 'tar'}"
    with tarfile.open(full, "w:gz" if cut == "gz" else "w") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    data = full.read_bytes()
    with tarfile.open(full) as tar:  # end inside the last image (not on a 512-byte block boundary)
        last = [m for m in tar.getmembers() if m.isfile()][-1]
    end = len(data) // 2 if cut == "gz" else last.offset_data + last.size // 2
    archive = tmp_path / f"cut.{'tar.gz' if cut == 'gz' else 'tar'}"
    archive.write_bytes(data[:end])
    with pytest.raises(DataError, match=r"^archive .*cut\.tar(\.gz)? is truncated or corrupt \(.*\); copy or download"):
        ImageFolder(root=str(archive)).load()


def test_a_file_that_is_no_tar_archive(tmp_path):
    garbage = tmp_path / "data.tar.gz"
    garbage.write_bytes(b"not a tarball\n" * 40)
    with pytest.raises(DataError, match=r"data\.tar\.gz is not a tar archive or is corrupt \(neither a gzip"):
        ImageFolder(root=str(garbage)).load()
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt is a file, not a folder or a \.tar/\.tar\.gz archive"):
        ImageFolder(root=str(other)).load()
