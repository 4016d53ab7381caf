import enum
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from proxynas.engine import Cache, CacheWarning, Stage
from proxynas.engine.cache import CacheMiss, canonicalize, stage_key, value_key

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


KEY_SCRIPT = """
import enum, sys
from dataclasses import dataclass
from pathlib import Path
sys.path.insert(0, {repo!r})
from proxynas.engine.cache import stage_key
from proxynas.engine.graph import Stage

@dataclass(frozen=True)
class Cfg:
    lr: float
    steps: int
    name: str = "x"

class Color(enum.Enum):
    RED = 1

def fn(a, b, params=None):
    return a

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


def test_save_load_roundtrip_and_meta(tmp_path):
    cache = Cache(tmp_path)
    assert not cache.has("s", "abc")
    assert cache.get("s", "abc") is None
    with pytest.raises(CacheMiss):
        cache.load("s", "abc")
    cache.save("s", "abc", {"x": torch.arange(3), "y": [1, 2]}, {"version": "1", "params": None, "seconds": 0.5})
    assert cache.has("s", "abc")
    out = cache.load("s", "abc")
    assert torch.equal(out["x"], torch.arange(3)) and out["y"] == [1, 2]
    meta = json.loads((tmp_path / "s" / "abc" / "meta.json").read_text())
    assert meta["stage"] == "s" and meta["key"] == "abc" and meta["outputs"] == ["x", "y"]
    assert meta["seconds"] == 0.5 and "created" in meta and meta["version"] == "1"
    assert cache.entries() == [("s", "abc")]


def test_crash_mid_save_leaves_no_entry(tmp_path, monkeypatch):
    cache = Cache(tmp_path)

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="simulated"):
        cache.save("s", "abc", {"x": 1})
    assert not cache.has("s", "abc")
    assert cache.get("s", "abc") is None
    assert not (tmp_path / "s" / "abc").exists()
    assert [p.name for p in (tmp_path / "s").iterdir()] == []  # temp dir removed too


def test_leftover_temp_dir_is_ignored_and_cleaned(tmp_path):
    cache = Cache(tmp_path)
    # what a kill -9 during save leaves behind: a half-written temp folder
    tmp = tmp_path / "s" / ".tmp-abc-deadbeef"
    tmp.mkdir(parents=True)
    (tmp / "outputs.pt").write_bytes(b"garbage")
    (tmp / "meta.json").write_text("{")
    assert not cache.has("s", "abc")
    assert cache.entries() == []
    cache.save("s", "abc", {"x": 1})
    assert cache.load("s", "abc") == {"x": 1}
    assert cache.clean_partial() == 1
    assert not tmp.exists() and cache.has("s", "abc")


def test_corrupt_entry_is_a_miss_with_warning(tmp_path):
    cache = Cache(tmp_path)
    cache.save("s", "abc", {"x": 1})
    (tmp_path / "s" / "abc" / "outputs.pt").write_bytes(b"not a torch file")
    with pytest.warns(CacheWarning, match="unreadable"):
        assert cache.get("s", "abc") is None
    assert not cache.has("s", "abc")  # discarded, so it is recomputed next time
    cache.save("s", "abc", {"x": 2})
    assert cache.load("s", "abc") == {"x": 2}


def test_corrupt_meta_is_a_miss(tmp_path):
    cache = Cache(tmp_path)
    cache.save("s", "abc", {"x": 1})
    (tmp_path / "s" / "abc" / "meta.json").write_text("{not json")
    with pytest.warns(CacheWarning):
        assert cache.get("s", "abc") is None


def test_save_over_existing_entry_keeps_it_complete(tmp_path):
    cache = Cache(tmp_path)
    cache.save("s", "abc", {"x": 1})
    cache.save("s", "abc", {"x": 1})
    assert cache.load("s", "abc") == {"x": 1}
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["abc"]


def test_unsafe_names_rejected(tmp_path):
    cache = Cache(tmp_path)
    with pytest.raises(ValueError):
        cache.has("../x", "abc")
    with pytest.raises(ValueError):
        cache.save("s", "../../abc", {})
