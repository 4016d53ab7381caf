"""The workplace's CIFAR-10 JPEG tarball is where the README says, in ImageFolder layout."""

import io
import re
import tarfile

from PIL import Image

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
