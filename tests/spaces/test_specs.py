"""Where spaces come from: specs shipped as package data, one spec loader, discovered space modules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import proxynas
from proxynas.errors import ConfigError
from proxynas.spaces import spec as spec_module
from proxynas.spaces.convnet import load_convnet_spec
from proxynas.spaces.spec import load_spec, read_spec, spec_names

REPO = Path(__file__).resolve().parents[2]


def test_builtin_specs_are_package_data():
    package_dir = Path(proxynas.__file__).resolve().parent
    assert spec_module.SPEC_DIR == package_dir / "spaces" / "specs"
    assert spec_names() == ["convnet720", "nb201"]
    assert load_spec("nb201").path.parent == spec_module.SPEC_DIR
    assert load_convnet_spec("convnet720").path.parent == spec_module.SPEC_DIR
    # the top-level folder only points to them: no second copy that could drift
    assert not list((REPO / "search_spaces").glob("*.yaml"))
    assert "proxynas/spaces/specs" in (REPO / "search_spaces" / "README.md").read_text()


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a list\n", "expected a mapping with keys name, "),
        ("name: other\ncitation: c\n", "missing key"),
        ("key: [\n", "invalid YAML"),
    ],
)
def test_both_spec_kinds_share_one_loader(tmp_path, monkeypatch, text, message):
    monkeypatch.setattr(spec_module, "SPEC_DIR", tmp_path)
    (tmp_path / "x.yaml").write_text(text)
    errors = []
    for load in (load_spec, load_convnet_spec):
        with pytest.raises(ConfigError, match=message) as info:
            load("x")
        errors.append(str(info.value))
    assert errors[0].split(":")[0] == errors[1].split(":")[0] == str(tmp_path / "x.yaml")


@pytest.mark.parametrize("name", ["", "../nb201", "a/b", ".hidden", 3, None])
def test_spec_names_are_plain_file_stems(name):
    with pytest.raises(ConfigError, match="plain file stem"):
        read_spec(name, ("name", "citation"))


def test_unknown_spec_lists_the_available_ones():
    available = r"\(available: convnet720, nb201\)"
    with pytest.raises(ConfigError, match=r"not found: .*specs/nope\.yaml does not exist " + available):
        load_spec("nope")


TOY_SPACE = '''
from dataclasses import dataclass

from proxynas.errors import ArchError
from proxynas.spaces.base import SEARCH_SPACES
from proxynas.spaces.product import ProductSpace


@SEARCH_SPACES.register("toy")
@dataclass(frozen=True)
class ToySpace(ProductSpace):
    odd_only: bool = False

    def choices(self):
        return ((1, 2, 3), ("a", "b"))

    def arch_values(self, arch):
        n, sep, c = str(arch).partition("-")
        if not sep or n not in ("1", "2", "3") or c not in ("a", "b"):
            raise ArchError(f"bad toy arch {arch!r}")
        return (int(n), c)

    def arch_string(self, values):
        return f"{values[0]}-{values[1]}"

    @property
    def filtered(self):
        return self.odd_only

    def accepts(self, code):
        return code[0] % 2 == 0  # values 1 and 3

    def build(self, arch, *, in_channels, num_classes, image_size):
        raise NotImplementedError
'''


def test_a_new_space_module_is_discovered_and_gets_the_product_machinery(tmp_path):
    """Dropping a module into proxynas/spaces registers its space; nothing lists it by hand."""
    copy = tmp_path / "proxynas"
    shutil.copytree(Path(proxynas.__file__).resolve().parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "spaces" / "toy.py").write_text(TOY_SPACE)
    script = textwrap.dedent(
        """
        import json
        import proxynas
        from proxynas.spaces import SEARCH_SPACES
        toy = SEARCH_SPACES.get("toy")
        print(json.dumps({
            "file": proxynas.__file__,
            "names": SEARCH_SPACES.names(),
            "all": list(toy().enumerate()),
            "code": toy().encode("3-b"),
            "cards": toy().cardinalities(),
            "odd": list(toy(odd_only=True).enumerate()),
            "sample": toy(odd_only=True).sample(4, seed=0),
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert Path(out["file"]).resolve().is_relative_to(tmp_path.resolve())
    assert out["names"] == ["convnet720", "nb201", "toy"]
    assert out["all"] == ["1-a", "1-b", "2-a", "2-b", "3-a", "3-b"]  # position 0 slowest
    assert (out["code"], out["cards"]) == ([2, 1], [3, 2])
    assert out["odd"] == ["1-a", "1-b", "3-a", "3-b"]  # the filter applies to enumerate and sample
    assert sorted(out["sample"]) == out["odd"]
