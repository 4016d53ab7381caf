"""The NB201 cell space: spec loading, arch-string codec, enumeration, sampling."""

from __future__ import annotations

import csv
import gzip
import itertools
from collections import Counter
from pathlib import Path

import pytest

from proxynas.errors import ArchError, ConfigError
from proxynas.spaces import NB201Space, format_arch, is_connected, load_spec, parse_arch
from proxynas.spaces import spec as spec_module
from proxynas.testing.spaces import SearchSpaceContract

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


class TestNB201Contract(SearchSpaceContract):
    space = NB201Space(channels=4, cells_per_stage=1)
    junk = SearchSpaceContract.junk + (
        EXAMPLE.replace("~2|", "~3|"),
        EXAMPLE.replace("skip_connect", "skip"),
        EXAMPLE[:-1],
    )


class TestNB201ConnectedContract(SearchSpaceContract):
    space = NB201Space(channels=4, cells_per_stage=1, skip_disconnected=True)
    junk = SearchSpaceContract.junk + ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",)  # disconnected


@pytest.fixture(scope="module")
def table_archs(nb201_csv: Path) -> list[str]:
    with gzip.open(nb201_csv, "rt", newline="") as f:
        return [row["arch_str"] for row in csv.DictReader(f)]


# -- spec ---------------------------------------------------------------------


def test_spec_matches_nb201_paper():
    spec = load_spec("nb201")
    assert spec.ops == OPS  # canonical order: encodings depend on it
    assert spec.nodes == 4 and spec.num_edges == 6 and spec.size == 15_625
    assert (spec.channels, spec.cells_per_stage) == (16, 5)
    assert "NAS-Bench-201" in spec.citation
    space = NB201Space()
    assert (space.channels, space.cells_per_stage) == (spec.channels, spec.cells_per_stage)


def test_missing_spec_names_the_path():
    with pytest.raises(ConfigError, match=r"no_such_space\.yaml"):
        load_spec("no_such_space")
    with pytest.raises(ConfigError, match="no_such_space"):
        NB201Space(spec="no_such_space")


def _write_spec(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.yaml").write_text(text)


GOOD_VARIANT = """
name: tiny
ops: [none, skip_connect, nor_conv_3x3]
nodes: 3
channels: 8
cells_per_stage: 1
citation: a variant of NB201
"""


def test_variant_spec_defines_a_new_space(tmp_path, monkeypatch):
    monkeypatch.setattr(spec_module, "SPEC_DIR", tmp_path)
    _write_spec(tmp_path, "tiny", GOOD_VARIANT)
    space = NB201Space(spec="tiny", channels=2, cells_per_stage=1)
    archs = list(space.enumerate())
    assert len(archs) == space.size() == 3**3
    assert "|nor_conv_3x3~0|+|skip_connect~0|none~1|" in archs
    assert space.encode("|nor_conv_3x3~0|+|skip_connect~0|none~1|") == (2, 1, 0)
    with pytest.raises(ArchError, match="allowed ops: none, skip_connect, nor_conv_3x3"):
        space.validate("|avg_pool_3x3~0|+|skip_connect~0|none~1|")
    with pytest.raises(ArchError, match="expected 2"):
        space.validate(EXAMPLE)  # a 4-node NB201 cell is not a 3-node cell
    assert space.num_params("|nor_conv_3x3~0|+|skip_connect~0|none~1|", in_channels=1, num_classes=2, image_size=8) > 0


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD_VARIANT.replace("[none, skip_connect, nor_conv_3x3]", "[none, none]"), "distinct"),
        (GOOD_VARIANT.replace("nodes: 3", "nodes: 1"), "nodes must be an integer >= 2"),
        (GOOD_VARIANT.replace("name: tiny", "name: other"), "must match the file name"),
        (GOOD_VARIANT + "extra: 1\n", "unknown key"),
        (GOOD_VARIANT.replace("citation: a variant of NB201", ""), "missing key"),
        (GOOD_VARIANT.replace("nor_conv_3x3]", "sep_conv_3x3]"), "no implementation"),
        ("ops: [\n", "invalid YAML"),
    ],
)
def test_bad_specs_raise_config_error(tmp_path, monkeypatch, text, message):
    monkeypatch.setattr(spec_module, "SPEC_DIR", tmp_path)
    _write_spec(tmp_path, "tiny", text)
    with pytest.raises(ConfigError, match=message):
        NB201Space(spec="tiny")


# -- settings -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 0}, "channels must be an integer >= 1"),
        ({"cells_per_stage": -1}, "cells_per_stage must be an integer >= 1"),
        ({"channels": 2.5}, "channels must be"),
        ({"skip_disconnected": "yes"}, "skip_disconnected must be true or false"),
    ],
)
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NB201Space(**kwargs)


# -- codec ------------------------------------------------------------------


def test_parse_example():
    assert parse_arch(EXAMPLE) == (
        ("nor_conv_3x3", 0),
        ("nor_conv_3x3", 0),
        ("avg_pool_3x3", 1),
        ("skip_connect", 0),
        ("nor_conv_3x3", 1),
        ("skip_connect", 2),
    )


def test_round_trip_every_table_arch(table_archs):
    assert len(table_archs) == 15_625
    for arch in table_archs:
        pairs = parse_arch(arch)
        assert [i for _, i in pairs] == [0, 0, 1, 0, 1, 2]
        assert format_arch(pairs) == arch


@pytest.mark.parametrize(
    "arch, message",
    [
        (EXAMPLE.replace("+", ","), "node group"),  # wrong node separator
        (EXAMPLE.replace("~", "-"), "must look like 'op~"),  # wrong op/input separator
        (EXAMPLE[1:], "must start and end with '|'"),  # missing leading bar
        (EXAMPLE.replace("|+|", "+"), "must start and end with '|'"),
        (EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"), "unknown op 'max_pool_3x3'; allowed ops: none, skip_connect"),
        (EXAMPLE.replace("skip_connect~2", "skip_connect~3"), "input index '3', expected 2"),
        (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~0"), "input index '0', expected 1"),
        (EXAMPLE.replace("skip_connect~2", "skip_connect~x"), "input index 'x', expected 2"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "found 2 node group"),  # too few nodes
        (EXAMPLE + "+|none~0|none~1|none~2|none~3|", "found 4 node group"),  # too many nodes
        (EXAMPLE.replace("|avg_pool_3x3~1|", "|avg_pool_3x3~1|none~2|"), "node 2 has 3 input"),
        ("", "node group"),
        (42, "expected a string"),
    ],
)
def test_malformed_strings_raise_arch_error(arch, message):
    with pytest.raises(ArchError, match=message) as info:
        NB201Space().validate(arch)
    text = str(info.value)
    assert "\n" not in text
    assert "expected format |op~0|+|op~0|op~1|+|op~0|op~1|op~2|" in text


def test_format_rejects_bad_pairs():
    pairs = list(parse_arch(EXAMPLE))
    with pytest.raises(ArchError, match="expected 6"):
        format_arch(pairs[:5])
    with pytest.raises(ArchError, match="expected 1"):
        format_arch(pairs[:2] + [("none", 0)] + pairs[3:])
    with pytest.raises(ArchError, match="unknown op 'conv'"):
        format_arch([("conv", 0)] + pairs[1:])


def test_validate_canonicalises_and_applies_filter():
    space = NB201Space()
    assert space.validate(f"  {EXAMPLE}\n") == EXAMPLE
    dead = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    assert space.validate(dead) == dead
    with pytest.raises(ArchError, match="disconnected"):
        NB201Space(skip_disconnected=True).validate(dead)


def test_encode_example_and_round_trip_all():
    space = NB201Space()
    assert space.cardinalities() == (5,) * 6
    assert space.encode(EXAMPLE) == (3, 3, 4, 1, 3, 1)
    codes = set()
    for code in itertools.product(range(5), repeat=6):
        arch = space.decode(code)
        assert space.encode(arch) == code
        codes.add(arch)
    assert len(codes) == 15_625


@pytest.mark.parametrize("code", [(0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 5), (0, 0, 0, 0, 0, -1), (0, 0, 0, 0, 0, 1.0), 7])
def test_decode_rejects_bad_codes(code):
    with pytest.raises(ArchError, match="expected 6 integers in 0..4"):
        NB201Space().decode(code)


# -- connectivity and enumeration ---------------------------------------------


@pytest.mark.parametrize(
    "arch, connected",
    [
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", False),
        ("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", True),  # direct 0 -> 3
        ("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|", False),  # node 2 unreached
        ("|skip_connect~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_1x1~2|", True),  # 0->1->2->3
        ("|none~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|", False),  # only from 1
        (EXAMPLE, True),
    ],
)
def test_is_connected(arch, connected):
    assert is_connected(arch) is connected
    assert is_connected(parse_arch(arch)) is connected


def _reaches_output(code: tuple[int, ...]) -> bool:
    """Independent check by transitive closure of the 4x4 adjacency matrix."""
    adj = [[False] * 4 for _ in range(4)]
    edges = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    for (i, j), op in zip(edges, code):
        adj[i][j] = op != 0
    for k in range(4):
        for i in range(4):
            for j in range(4):
                adj[i][j] = adj[i][j] or (adj[i][k] and adj[k][j])
    return adj[0][3]


def test_enumerate_is_the_table(table_archs):
    space = NB201Space()
    archs = list(space.enumerate())
    assert len(archs) == len(set(archs)) == space.size() == 15_625
    assert set(archs) == set(table_archs)


def test_skip_disconnected_is_the_connected_subset():
    full = set(NB201Space().enumerate())
    space = NB201Space(skip_disconnected=True)
    kept = list(space.enumerate())
    assert len(kept) == len(set(kept)) == space.size()
    assert set(kept) < full
    assert all(is_connected(a) for a in kept)
    assert not any(is_connected(a) for a in full - set(kept))
    expected = sum(_reaches_output(code) for code in itertools.product(range(5), repeat=6))
    assert space.size() == expected


# -- sampling ---------------------------------------------------------------


# Drawn before the spaces shared one product-space base; any change of sample
# or enumeration order changes which archs a seeded pipeline evaluates.
PINNED_SAMPLES = {
    False: [
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|",
        "|nor_conv_1x1~0|+|none~0|none~1|+|nor_conv_1x1~0|nor_conv_1x1~1|skip_connect~2|",
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    ],
    True: [
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
        "|nor_conv_1x1~0|+|none~0|nor_conv_1x1~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_1x1~2|",
        "|avg_pool_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
    ],
}


@pytest.mark.parametrize("skip_disconnected", [False, True])
def test_sample_and_enumeration_order_are_pinned(skip_disconnected):
    space = NB201Space(skip_disconnected=skip_disconnected)
    assert space.sample(3, seed=0) == PINNED_SAMPLES[skip_disconnected]
    archs = list(space.enumerate())
    assert archs[0] == space.decode(space.encode(archs[0]))
    if skip_disconnected:
        assert space.size() == 15_284
        assert archs[:2] == [
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|skip_connect~2|",
        ]
        assert archs[3 * 997] == "|skip_connect~0|+|none~0|none~1|+|nor_conv_3x3~0|avg_pool_3x3~1|skip_connect~2|"
    else:
        assert [space.encode(a) for a in archs] == list(itertools.product(range(5), repeat=6))


def test_sample_honours_filter_and_size():
    space = NB201Space(skip_disconnected=True)
    everything = space.sample(space.size(), seed=3)
    assert len(set(everything)) == space.size()
    assert all(is_connected(a) for a in everything)
    with pytest.raises(ConfigError, match=f"only {space.size()} connected"):
        space.sample(space.size() + 1, seed=0)
    with pytest.raises(ConfigError, match=">= 0"):
        space.sample(-1, seed=0)


def test_sample_is_uniform_over_ops():
    """Each edge's op should be ~uniform: 5000 draws, 1000 expected per op."""
    space = NB201Space()
    codes = [space.encode(a) for a in space.sample(5000, seed=7)]
    for edge in range(6):
        counts = Counter(code[edge] for code in codes)
        assert set(counts) == set(range(5))
        # sd of a count ~ sqrt(5000 * .2 * .8) ~ 28; 6 sd is a safe bound
        assert all(abs(c - 1000) < 170 for c in counts.values()), counts
