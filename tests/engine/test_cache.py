"""The stage cache: atomic entries, crash safety, corrupt entries (keys: test_keys.py)."""

import json

import pytest
import torch

from proxynas.engine import Cache, CacheWarning
from proxynas.engine.cache import CacheMiss


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
    assert not cache.has("s", "abc")  # not a whole torch.save archive: not cached, so it is recomputed
    assert cache.get("s", "abc") is None
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
