"""Cache keys: canonical forms, stability, and what changes a key."""

import enum
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from proxynas.engine import Stage
from proxynas.engine.keys import canonicalize, stage_key, value_key

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cfg:
    lr: float
    steps: int
    name: str = "x"


class Color(enum.Enum):
    RED = 1


def fn(a, b, params=None):
    return a


def mk(params=None, version="1", inputs=("a", "b"), outputs=("y",)):
    return Stage("train", fn, inputs=inputs, outputs=outputs, params=params, version=version)


UP = {"a": "k1", "b": "k2"}
PARAMS = {"cfg": Cfg(0.1, 3), "path": Path("/data/x"), "color": Color.RED, "list": [1, 2.5, None, True]}


def test_key_is_stable_across_dict_order():
    p1 = {"b": 2, "a": {"y": 1.0, "x": (1, 2)}}
    p2 = {"a": {"x": [1, 2], "y": 1.0}, "b": 2}
    assert stage_key(mk(p1), UP) == stage_key(mk(p2), UP)
    assert stage_key(mk(), {"a": "k1", "b": "k2"}) == stage_key(mk(), {"b": "k2", "a": "k1"})


# A fresh interpreter (its own hash seed) builds the same params in another order.
KEY_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from proxynas.engine.graph import Stage
from proxynas.engine.keys import stage_key
from tests.engine.test_keys import Cfg, Color, fn

params = {{"list": [1, 2.5, None, True], "color": Color.RED, "path": Path("/data/x"), "cfg": Cfg(0.1, 3)}}
stage = Stage("train", fn, inputs=("a", "b"), outputs=("y",), params=params)
print(stage_key(stage, {{"b": "k2", "a": "k1"}}))
"""


def test_key_is_stable_across_processes(tmp_path):
    script = tmp_path / "key.py"
    script.write_text(KEY_SCRIPT.format(repo=str(REPO)))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == stage_key(mk(PARAMS), UP)


def test_key_changes_with_params_version_upstream_and_outputs():
    base = stage_key(mk({"lr": 0.1}), UP)
    assert stage_key(mk({"lr": 0.2}), UP) != base
    assert stage_key(mk({"lr": 0.1}, version="2"), UP) != base
    assert stage_key(mk({"lr": 0.1}), {"a": "k1", "b": "other"}) != base
    assert stage_key(mk({"lr": 0.1}, outputs=("y", "z")), UP) != base
    assert stage_key(mk(Cfg(0.1, 3)), UP) != stage_key(mk(Cfg(0.1, 4)), UP)
    assert stage_key(mk({"x": 1}), UP) != stage_key(mk({"x": 1.0}), UP)
    assert stage_key(mk({"x": 1}), UP) != stage_key(mk({"x": True}), UP)


def test_canonicalize_forms_and_type_error():
    c = canonicalize(PARAMS)
    assert c["cfg"] == {"__dataclass__": "Cfg", "fields": {"lr": {"__float__": "0.1"}, "steps": 3, "name": "x"}}
    assert c["path"] == {"__path__": "/data/x"}
    assert c["color"] == {"__enum__": "Color", "name": "RED"}
    json.dumps(canonicalize({1: "a", "1": "b", float("nan"): None}))
    with pytest.raises(TypeError, match="Tensor"):
        canonicalize({"t": torch.zeros(1)})
    assert value_key([1, 2]) == value_key((1, 2)) != value_key([2, 1])


@dataclass(frozen=True)
class Plugin:
    version: ClassVar[str] = "1"
    lr: float = 0.1


@dataclass(frozen=True)
class VersionField:
    version: str = "a"


def test_a_plugins_class_version_is_part_of_its_canonical_form(monkeypatch):
    before = stage_key(mk({"method": Plugin()}), UP)
    assert canonicalize(Plugin())["__version__"] == "1"
    monkeypatch.setattr(Plugin, "version", "2")
    assert canonicalize(Plugin())["__version__"] == "2"
    assert stage_key(mk({"method": Plugin()}), UP) != before
    # a dataclass whose version is a field keeps it among its fields, once
    assert "__version__" not in canonicalize(VersionField()) and canonicalize(VersionField())["fields"] == {"version": "a"}
    assert "__version__" not in canonicalize(Cfg(0.1, 3))


def test_a_setting_keyed_when_set_leaves_keys_unchanged_at_its_default():
    from proxynas.engine.keys import canonical_json
    from proxynas.fields import checked

    @dataclass(frozen=True)
    class Before:
        lr: float = 0.1

    @dataclass(frozen=True)
    class After:  # the same plugin with a setting added later
        lr: float = 0.1
        batch: int = checked(1, ge=1, keyed_when_set=True)

    Before.__qualname__ = After.__qualname__ = "Plugin"
    assert canonical_json(After()) == canonical_json(Before())
    assert canonical_json(After(batch=4)) != canonical_json(Before())
    assert '"batch":4' in canonical_json(After(batch=4))
