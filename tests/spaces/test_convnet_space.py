"""The 720-ConvNet space of DC/DM: spec, arch-string codec, enumeration, sampling, networks."""

from __future__ import annotations

import itertools

import pytest
import torch

from proxynas.errors import ArchError, ConfigError
from proxynas.models import ConvNet
from proxynas.spaces import spec as spec_module
from proxynas.spaces.convnet import (
    DEFAULT_ARCH,
    DIMENSIONS,
    ConvNetSpace,
    format_convnet_arch,
    load_convnet_spec,
    parse_convnet_arch,
)
from proxynas.testing.spaces import SearchSpaceContract

# The grid of Zhao et al. (ICLR 2021), NAS experiment, in the YAML's order.
PAPER_GRID = {
    "depth": (1, 2, 3, 4),
    "width": (32, 64, 128, 256),
    "act": ("sigmoid", "relu", "leakyrelu"),
    "norm": ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm"),
    "pool": ("none", "maxpool", "avgpool"),
}


def arch_of(depth, width, act, norm, pool) -> str:
    return f"depth={depth}|width={width}|act={act}|norm={norm}|pool={pool}"


class TestConvNetContract(SearchSpaceContract):
    space = ConvNetSpace()
    in_channels = 1
    junk = SearchSpaceContract.junk + (
        DEFAULT_ARCH.replace("depth=3", "depth=03"),
        DEFAULT_ARCH.replace("|pool=avgpool", ""),
        "width=128|depth=3|act=relu|norm=instancenorm|pool=avgpool",
    )


@pytest.fixture(scope="module")
def space() -> ConvNetSpace:
    return ConvNetSpace()


@pytest.fixture(scope="module")
def all_archs(space) -> list[str]:
    return list(space.enumerate())


# -- spec ---------------------------------------------------------------------


def test_spec_matches_the_papers_grid():
    spec = load_convnet_spec("convnet720")
    assert dict(zip(DIMENSIONS, spec.choices)) == PAPER_GRID
    assert spec.cardinalities == (4, 4, 3, 5, 3)
    assert spec.size == 720
    assert "Dataset Condensation with Gradient Matching" in spec.citation
    assert "Distribution Matching" in spec.citation


def test_missing_spec_names_the_path():
    with pytest.raises(ConfigError, match=r"no_such_space\.yaml"):
        load_convnet_spec("no_such_space")
    with pytest.raises(ConfigError, match="no_such_space"):
        ConvNetSpace(spec="no_such_space")
    with pytest.raises(ConfigError, match="plain file stem"):
        load_convnet_spec("../convnet720")


SMALL_VARIANT = """
name: small
dimensions:
  depth: [2, 1]
  width: [8]
  act: [relu]
  norm: [none, batchnorm]
  pool: [avgpool]
citation: a variant of the DC 720-ConvNet space
"""


def test_variant_spec_defines_a_new_space(tmp_path, monkeypatch):
    monkeypatch.setattr(spec_module, "SPEC_DIR", tmp_path)
    (tmp_path / "small.yaml").write_text(SMALL_VARIANT)
    space = ConvNetSpace(spec="small")
    assert space.cardinalities() == (2, 1, 1, 2, 1) and space.size() == 4
    assert list(space.enumerate()) == [
        arch_of(2, 8, "relu", "none", "avgpool"),
        arch_of(2, 8, "relu", "batchnorm", "avgpool"),
        arch_of(1, 8, "relu", "none", "avgpool"),
        arch_of(1, 8, "relu", "batchnorm", "avgpool"),
    ]
    assert space.encode(arch_of(1, 8, "relu", "batchnorm", "avgpool")) == (1, 0, 0, 1, 0)
    with pytest.raises(ArchError, match="unknown width '128'; allowed: 8;") as info:
        space.validate(arch_of(2, 128, "relu", "none", "avgpool"))
    assert str(info.value).endswith("e.g. 'depth=2|width=8|act=relu|norm=none|pool=avgpool'")  # DEFAULT_ARCH is not in it
    with pytest.raises(ArchError, match="unknown depth '3'; allowed: 2, 1"):
        space.validate(DEFAULT_ARCH)


@pytest.mark.parametrize(
    "text, message",
    [
        (SMALL_VARIANT.replace("name: small", "name: other"), "must match the file name"),
        (SMALL_VARIANT + "extra: 1\n", "unknown key"),
        (SMALL_VARIANT.replace("citation: a variant of the DC 720-ConvNet space", ""), "missing key"),
        (SMALL_VARIANT.replace("  pool: [avgpool]\n", ""), "exactly depth, width, act, norm, pool"),
        (SMALL_VARIANT.replace("  width: [8]\n", "").replace("  norm:", "  width: [8]\n  norm:"), "in that order"),
        (SMALL_VARIANT.replace("[relu]", "[relu, swish]"), r"unknown value\(s\) 'swish'; implemented: sigmoid"),
        (SMALL_VARIANT.replace("[none, batchnorm]", "[none, none]"), "distinct"),
        (SMALL_VARIANT.replace("[2, 1]", "[2, 0]"), "integers >= 1"),
        (SMALL_VARIANT.replace("[8]", "[true]"), "integers >= 1"),
        (SMALL_VARIANT.replace("[8]", "[]"), "non-empty list"),
        ("dimensions: [\n", "invalid YAML"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_specs_raise_config_error(tmp_path, monkeypatch, text, message):
    monkeypatch.setattr(spec_module, "SPEC_DIR", tmp_path)
    (tmp_path / "small.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        ConvNetSpace(spec="small")


# -- settings -------------------------------------------------------------------


def test_spec_setting_must_be_a_name():
    with pytest.raises(ValueError, match="spec must be the name"):
        ConvNetSpace(spec=3)  # type: ignore[arg-type]


# -- all 720 ------------------------------------------------------------------


def test_enumerate_is_exactly_the_product_of_choices(space, all_archs):
    assert space.size() == len(all_archs) == 720 == 4 * 4 * 3 * 5 * 3
    assert len(set(all_archs)) == 720
    product = [arch_of(*values) for values in itertools.product(*PAPER_GRID.values())]
    assert all_archs == product  # same set *and* the documented order (depth slowest, pool fastest)
    assert list(space.enumerate()) == all_archs  # deterministic
    assert all_archs[0] == "depth=1|width=32|act=sigmoid|norm=none|pool=none"
    assert all_archs[-1] == "depth=4|width=256|act=leakyrelu|norm=groupnorm|pool=avgpool"
    assert DEFAULT_ARCH in all_archs


def test_codec_round_trips_every_arch(space, all_archs):
    assert space.cardinalities() == (4, 4, 3, 5, 3)
    codes = [space.encode(a) for a in all_archs]
    assert codes == list(itertools.product(*(range(n) for n in space.cardinalities())))
    for arch, code in zip(all_archs, codes):
        assert space.validate(arch) == arch
        assert space.decode(code) == arch
        assert space.decode(list(code)) == arch
        config = space.config(arch)
        assert config == parse_convnet_arch(arch)
        assert format_convnet_arch(config) == arch
        assert [config[d] for d in DIMENSIONS] == [PAPER_GRID[d][i] for d, i in zip(DIMENSIONS, code)]
    assert space.encode(DEFAULT_ARCH) == (2, 2, 1, 3, 2)
    assert space.config(DEFAULT_ARCH) == {
        "depth": 3, "width": 128, "act": "relu", "norm": "instancenorm", "pool": "avgpool"
    }


def test_validate_ignores_only_surrounding_whitespace(space):
    assert space.validate(f"  {DEFAULT_ARCH}\n") == DEFAULT_ARCH


@pytest.mark.parametrize(
    "arch, message",
    [
        ("", r"found 1 field\(s\)"),
        ("depth=3|width=128|act=relu|norm=instancenorm", r"found 4 field\(s\) separated by '\|', expected 5"),
        (DEFAULT_ARCH + "|", r"found 6 field"),
        ("depth=3,width=128,act=relu,norm=instancenorm,pool=avgpool", r"found 1 field"),
        ("depth:3|width=128|act=relu|norm=instancenorm|pool=avgpool", r"field 1 'depth:3' must look like 'depth=value'"),
        ("=3|width=128|act=relu|norm=instancenorm|pool=avgpool", "must look like 'depth=value'"),
        ("width=128|depth=3|act=relu|norm=instancenorm|pool=avgpool", "field 1 is 'width', expected 'depth'"),
        ("depth=3|width=128|activation=relu|norm=instancenorm|pool=avgpool", "unknown field 'activation'"),
        ("depth=5|width=128|act=relu|norm=instancenorm|pool=avgpool", r"unknown depth '5'; allowed: 1, 2, 3, 4"),
        ("depth=03|width=128|act=relu|norm=instancenorm|pool=avgpool", "unknown depth '03'"),
        ("depth=3|width=100|act=relu|norm=instancenorm|pool=avgpool", "unknown width '100'"),
        ("depth=3|width=128|act=ReLU|norm=instancenorm|pool=avgpool", "unknown act 'ReLU'; allowed: sigmoid"),
        ("depth=3|width=128|act=relu|norm=instance|pool=avgpool", "unknown norm 'instance'"),
        ("depth=3|width=128|act=relu|norm=instancenorm|pool=", "unknown pool ''"),
        ("depth=3|width=128|act=relu|norm=instancenorm|pool=avgpool=2", "unknown pool 'avgpool=2'"),
        ("depth=3 |width=128|act=relu|norm=instancenorm|pool=avgpool", "unknown depth '3 '"),
        (None, "expected a string, got NoneType"),
        (("depth", 3), "expected a string, got tuple"),
    ],
)
def test_malformed_archs_raise_arch_error(space, arch, message):
    with pytest.raises(ArchError, match=message) as info:
        space.validate(arch)  # type: ignore[arg-type]
    text = str(info.value)
    assert "\n" not in text
    assert "expected format depth={1,2,3,4}|width={32,64,128,256}|act={sigmoid,relu,leakyrelu}|" in text
    assert text.endswith(f"e.g. {DEFAULT_ARCH!r}")
    with pytest.raises(ArchError):
        space.encode(arch)  # type: ignore[arg-type]
    with pytest.raises(ArchError):
        space.build(arch, in_channels=3, num_classes=10, image_size=32)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "code",
    [(0, 0, 0, 0), (0, 0, 0, 0, 0, 0), (4, 0, 0, 0, 0), (0, 0, 3, 0, 0), (0, 0, 0, 5, 0), (0, 0, 0, 0, -1),
     (0.0, 0, 0, 0, 0), (True, 0, 0, 0, 0), ("0", 0, 0, 0, 0), 7, None],
)
def test_bad_codes_raise_arch_error(space, code):
    with pytest.raises(ArchError, match=r"expected 5 integers \(depth 0\.\.3, width 0\.\.3, act 0\.\.2"):
        space.decode(code)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"depth": 3, "width": 128, "act": "relu", "norm": "instancenorm"}, "missing pool"),
        ({**dict(zip(DIMENSIONS, (3, 128, "relu", "instancenorm", "avgpool"))), "k": 1}, "unknown k"),
        (dict(zip(DIMENSIONS, ("3", 128, "relu", "instancenorm", "avgpool"))), "unknown depth '3'"),
        (dict(zip(DIMENSIONS, (True, 128, "relu", "instancenorm", "avgpool"))), "unknown depth True"),
        (dict(zip(DIMENSIONS, (3, 128.0, "relu", "instancenorm", "avgpool"))), "unknown width 128.0"),
        ("depth=3", "expected a mapping"),
    ],
)
def test_format_rejects_bad_configs(config, message):
    with pytest.raises(ArchError, match=message):
        format_convnet_arch(config)  # type: ignore[arg-type]


# -- sampling -----------------------------------------------------------------


def test_sample_is_pinned_prefix_stable_and_a_full_shuffle(space, all_archs):
    # drawn before the spaces shared one product-space base
    assert space.sample(3, seed=0) == [
        "depth=3|width=32|act=leakyrelu|norm=batchnorm|pool=maxpool",
        "depth=3|width=64|act=relu|norm=instancenorm|pool=maxpool",
        "depth=1|width=32|act=leakyrelu|norm=instancenorm|pool=avgpool",
    ]
    assert space.sample(2, seed=42) == [
        "depth=4|width=128|act=relu|norm=instancenorm|pool=none",
        "depth=1|width=128|act=relu|norm=instancenorm|pool=none",
    ]
    assert space.sample(10, seed=0) == space.sample(50, seed=0)[:10]  # random.sample prefixes are stable in n
    everything = space.sample(720, seed=3)
    assert sorted(everything) == sorted(all_archs)
    assert everything != all_archs  # shuffled, not enumeration order


def test_sampling_is_roughly_uniform(space):
    # 20 draws of 360 (half the space) per seed: each arch is drawn ~10 times.
    counts = dict.fromkeys(space.enumerate(), 0)
    for seed in range(20):
        for arch in space.sample(360, seed=seed):
            counts[arch] += 1
    assert min(counts.values()) >= 1 and max(counts.values()) <= 20
    per_depth = [sum(c for a, c in counts.items() if a.startswith(f"depth={d}|")) for d in (1, 2, 3, 4)]
    assert all(abs(c - 20 * 360 / 4) < 200 for c in per_depth)


# -- networks -----------------------------------------------------------------

# 12 configs; index i picks value i mod |choices| (width skewed by 3 so that
# depth 4 does not always meet width 256), covering every value of every dimension.
NETWORK_ARCHS = [
    arch_of(
        PAPER_GRID["depth"][i % 4],
        PAPER_GRID["width"][(3 * i + 1) % 4],
        PAPER_GRID["act"][i % 3],
        PAPER_GRID["norm"][i % 5],
        PAPER_GRID["pool"][(i + 1) % 3],
    )
    for i in range(12)
]


def test_network_archs_cover_every_choice():
    configs = [parse_convnet_arch(a) for a in NETWORK_ARCHS]
    assert len(set(NETWORK_ARCHS)) == 12
    for dim, values in PAPER_GRID.items():
        assert {c[dim] for c in configs} == set(values), dim


@pytest.mark.parametrize("arch", NETWORK_ARCHS)
@pytest.mark.parametrize("in_channels, image_size, num_classes", [(3, 32, 10), (1, 8, 7)])
def test_built_networks_train(space, arch, in_channels, image_size, num_classes):
    torch.manual_seed(0)
    net = space.build(arch, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    config = space.config(arch)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == config["depth"] and all(c.out_channels == config["width"] for c in convs)
    net.train()
    x = torch.randn(4, in_channels, image_size, image_size)
    y = torch.arange(4) % num_classes
    logits = net(x)
    assert logits.shape == (4, num_classes)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, y).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    n = sum(p.numel() for p in net.parameters())
    assert space.num_params(arch, in_channels=in_channels, num_classes=num_classes, image_size=image_size) == n


@pytest.mark.parametrize("pool", ["none", "maxpool"])
def test_features_are_the_conv_blocks(space, pool):
    arch = arch_of(3, 32, "relu", "batchnorm", pool)
    net = space.build(arch, in_channels=1, num_classes=3, image_size=8)
    x = torch.randn(2, 1, 8, 8)
    feats = net.forward_features(x)
    assert feats[0] is x and len(feats) == 1 + 3  # the images, then one map per block
    side = [8, 8, 8, 8] if pool == "none" else [8, 4, 2, 1]
    assert [f.shape[-1] for f in feats] == side
    assert [f.shape[1] for f in feats[1:]] == [32, 32, 32]
    net.eval()
    assert torch.equal(net.forward_features(x)[-1], net.forward_before_global_avg_pool(x))
    assert torch.equal(net.forward_before_global_avg_pool(x).flatten(1), net.embed(x))
    # a block is conv-norm-act[-pool]: the maps match running the layers by hand
    layers, out = list(net.features), x
    per_block = 3 if pool == "none" else 4
    for k in range(3):
        for layer in layers[k * per_block : (k + 1) * per_block]:
            out = layer(out)
        assert torch.equal(out, net.forward_features(x)[k + 1])
    assert isinstance(net, ConvNet) and net.block_ends == tuple(per_block * k for k in (1, 2, 3))


def test_num_params_matches_hand_count(space):
    # depth 1, width 32, no norm, no pool on 3x8x8, 10 classes:
    # conv 3*32*3*3 + 32 bias; linear (32*8*8)*10 + 10.
    arch = arch_of(1, 32, "relu", "none", "none")
    expected = (3 * 32 * 9 + 32) + (32 * 8 * 8 * 10 + 10)
    assert space.num_params(arch, in_channels=3, num_classes=10, image_size=8) == expected
    # Adding a 2x2 pool quarters the classifier input; an activation has no params.
    pooled = arch_of(1, 32, "sigmoid", "none", "avgpool")
    assert space.num_params(pooled, in_channels=3, num_classes=10, image_size=8) == (
        (3 * 32 * 9 + 32) + (32 * 4 * 4 * 10 + 10)
    )
    # BatchNorm adds a per-channel affine (running stats are buffers, not params).
    bn = arch_of(1, 32, "relu", "batchnorm", "none")
    assert space.num_params(bn, in_channels=3, num_classes=10, image_size=8) == expected + 2 * 32


def test_default_convnet_params_match_dc():
    # DC's ConvNet (D=3, W=128, IN, AvgPool) on CIFAR-10: 3 convs + per-channel
    # affine, then a 128*4*4 -> 10 classifier = 320,010 parameters.
    convs = (3 * 128 * 9 + 128) + 2 * (128 * 128 * 9 + 128)
    expected = convs + 3 * 2 * 128 + (128 * 4 * 4 * 10 + 10)
    assert expected == 320_010
    assert ConvNetSpace().num_params(DEFAULT_ARCH, in_channels=3, num_classes=10, image_size=32) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"in_channels": 0, "num_classes": 10, "image_size": 32}, "in_channels must be an integer >= 1"),
        ({"in_channels": 3, "num_classes": True, "image_size": 32}, "num_classes must be"),
        ({"in_channels": 3, "num_classes": 10, "image_size": 8.0}, "image_size must be"),
    ],
)
def test_build_checks_sizes(space, kwargs, message):
    with pytest.raises(ValueError, match=message):
        space.build(DEFAULT_ARCH, **kwargs)
