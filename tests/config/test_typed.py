from dataclasses import dataclass, field
from typing import Literal

import pytest

from proxynas.config.typed import apply_overrides, flatten, from_dict, to_dict
from proxynas.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    mode: Literal["a", "b"] = "a"

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


@dataclass(frozen=True)
class Outer:
    n: int = 1
    flag: bool = False
    name: str | None = None
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)


def test_builds_nested_and_converts_types():
    cfg = from_dict(Outer, {"n": 3, "inner": {"lr": 1, "mode": "b"}, "sizes": [4, 5]})
    assert cfg == Outer(n=3, inner=Inner(lr=1.0, mode="b"), sizes=(4, 5))
    assert isinstance(cfg.inner.lr, float)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"m": 1}, "unknown key 'm'; allowed keys: n, flag, name, inner, sizes"),
        ({"inner": {"lrr": 1}}, "unknown key 'inner.lrr'"),
        ({"n": "three"}, "n: expected an integer, got str 'three'"),
        ({"n": True}, "n: expected an integer"),
        ({"flag": "yes"}, "flag: expected true or false"),
        ({"inner": {"mode": "c"}}, "inner.mode: 'c' is not allowed; choose one of: a, b"),
        ({"inner": {"lr": -1}}, "inner: lr must be > 0"),
        ({"sizes": 3}, "sizes: expected a list"),
        ({"sizes": [1, "x"]}, "sizes[1]: expected an integer"),
    ],
)
def test_errors_name_the_key_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_parse_yaml_values_and_create_sections():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2.5", "a.c=true", "x.y=hello", "z=[1, 2]"])
    assert data == {"a": {"b": 2.5, "c": True}, "x": {"y": "hello"}, "z": [1, 2]}


def test_override_without_equals_is_a_clear_error():
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides({}, ["distill.ipc"])


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="'a' is a value"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_to_dict_round_trips_and_flattens():
    cfg = Outer(n=2, inner=Inner(lr=0.5))
    assert from_dict(Outer, to_dict(cfg)) == cfg
    flat = flatten(to_dict(cfg))
    assert flat["inner.lr"] == 0.5 and flat["n"] == 2
