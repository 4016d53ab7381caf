import math
from dataclasses import dataclass, field
from typing import Literal

import pytest

from proxynas.config.typed import Checked, apply_overrides, checked, flatten, from_dict, to_dict
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
    with pytest.raises(ConfigError, match="a is the value int 1, not a section of settings; make a a mapping"):
        apply_overrides({"a": 1}, ["a.b=2"])
    with pytest.raises(ConfigError, match="a.b is the value str 'x'"):
        apply_overrides({"a": {"b": "x"}}, ["a.b.c=2"])


@pytest.mark.parametrize("text, value", [
    ("1e6", 1e6), ("1e-3", 1e-3), ("-2.5E+2", -250.0), ("1.5e3", 1500.0), (".5", 0.5), ("1.0", 1.0),
    ("10", 10), ("1_000", 1000), ("1e", "1e"), ("e5", "e5"), ("1.2.3", "1.2.3"), (".inf", float("inf")),
])
def test_numbers_with_an_exponent_are_floats_as_in_yaml_1_2(text, value):
    """PyYAML (YAML 1.1) reads 1e6 and 1e-3 as strings; proxynas's loader reads them as floats."""
    from proxynas.config.typed import load_yaml

    got = load_yaml(f"x: {text}")["x"]
    assert got == value and type(got) is type(value)
    assert apply_overrides({}, [f"x={text}"])["x"] == value


def test_yaml_error_message_gives_line_and_column():
    import yaml

    from proxynas.config.typed import load_yaml, yaml_error_message

    with pytest.raises(yaml.YAMLError) as err:
        load_yaml("a: 1\nb: [x\nc: 3\n")
    assert yaml_error_message(err.value) == (
        "line 3, column 2: expected ',' or ']', but got ':' (while parsing a flow sequence that starts at line 2,"
        " column 4)"
    )


def test_to_dict_round_trips_and_flattens():
    cfg = Outer(n=2, inner=Inner(lr=0.5))
    assert from_dict(Outer, to_dict(cfg)) == cfg
    flat = flatten(to_dict(cfg))
    assert flat["inner.lr"] == 0.5 and flat["n"] == 2


# -- declared field checks: checked(...) + Checked ------------------------------------------


@dataclass(frozen=True)
class Base(Checked):
    steps: int = checked(10, gt=0)
    lr: float = checked(0.1, gt=0)
    momentum: float = checked(0.5, ge=0, lt=1)
    limit: int | None = checked(None, ge=1)
    init: str = checked("real", choices=("real", "noise"))
    mode: Literal["one", "all"] = checked("one")
    flag: bool = checked(False)
    rate: float = checked(0.1, gt=0, allow_nan=True)
    plain: int = 0  # not declared: never checked


@dataclass(frozen=True)
class Child(Base):
    steps: int = 50  # a new default keeps Base's check
    depth: int = checked(3, ge=1, le=8)

    def __post_init__(self):
        super().__post_init__()
        if self.depth > self.steps:
            raise ValueError(f"depth ({self.depth}) must be <= steps ({self.steps})")


@dataclass(frozen=True)
class Holder:
    child: Child = field(default_factory=Child)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps must be an integer > 0, got 0"),
        ({"steps": 2.5}, "steps must be an integer > 0, got 2.5"),
        ({"steps": True}, "steps must be an integer > 0, got True"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"lr": float("nan")}, "lr must be > 0, got nan"),
        ({"lr": "fast"}, "lr must be > 0, got 'fast'"),
        ({"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
        ({"limit": 0}, "limit must be an integer >= 1 or null, got 0"),
        ({"init": "zeros"}, "unknown init 'zeros'; choose one of: real, noise"),
        ({"mode": "some"}, "unknown mode 'some'; choose one of: one, all"),
        ({"flag": "yes"}, "flag must be true or false, got 'yes'"),
    ],
)
def test_direct_construction_raises_one_line_value_error(kwargs, message):
    with pytest.raises(ValueError) as err:
        Base(**kwargs)
    assert str(err.value) == message


def test_allowed_values_pass_and_allow_nan_lets_nan_through():
    Base(steps=1, lr=1e-9, momentum=0.0, limit=None, init="noise", mode="all", flag=True, plain=-5)
    Base(limit=4)
    assert math.isnan(Base(rate=float("nan")).rate)
    with pytest.raises(ValueError, match="rate must be > 0"):
        Base(rate=0.0)


def test_from_dict_names_the_key_path():
    with pytest.raises(ConfigError) as err:
        from_dict(Holder, {"child": {"momentum": 2}})
    assert str(err.value) == "child: momentum must be in [0, 1), got 2.0"
    with pytest.raises(ConfigError, match=r"^child: depth must be an integer in \[1, 8\], got 9$"):
        from_dict(Holder, {"child": {"depth": 9}})


def test_subclass_inherits_checks_and_keeps_its_cross_field_check():
    assert Child().steps == 50
    with pytest.raises(ValueError, match="steps must be an integer > 0, got 0"):
        Child(steps=0)  # redeclared default, inherited check
    with pytest.raises(ValueError, match="lr must be > 0"):
        Child(lr=-1.0)
    with pytest.raises(ValueError, match=r"depth \(5\) must be <= steps \(4\)"):
        Child(steps=4, depth=5)


def test_from_dict_checks_even_without_the_mixin():
    @dataclass(frozen=True)
    class Bare:
        n: int = checked(1, ge=1)

    assert Bare(n=0).n == 0  # no Checked mixin: direct construction is not checked...
    with pytest.raises(ConfigError, match=r"^Bare: n must be an integer >= 1, got 0$"):
        from_dict(Bare, {"n": 0})  # ...but from_dict checks every declared field


def test_check_hook_and_bad_declarations():
    def even(value):
        if value % 2:
            raise ValueError(f"size must be even, got {value}")

    @dataclass(frozen=True)
    class Sized(Checked):
        size: int = checked(2, gt=0, check=even)

    with pytest.raises(ValueError, match="size must be even, got 3"):
        Sized(size=3)
    with pytest.raises(ValueError, match="size must be an integer > 0"):
        Sized(size=-2)  # bounds first, then the hook
    with pytest.raises(TypeError, match="at most one lower bound"):
        checked(1, ge=0, gt=0)
