"""The contract every search space meets, as an inheritable pytest suite.

A space's tests subclass :class:`SearchSpaceContract` and name one (small,
fast) instance; pytest collects the inherited tests::

    from proxynas.testing.spaces import SearchSpaceContract

    class TestMySpace(SearchSpaceContract):
        space = MySpace(width=4)

The tests check what the pipeline relies on (``proxynas.spaces.base``):
canonical names and one-line ArchErrors from ``validate``, seeded distinct
in-space samples, a codec that round-trips and fits ``cardinalities``,
``enumerate`` agreeing with ``size``, networks whose forward gives logits and
that expose their features (:class:`proxynas.spaces.base.FeatureNetwork`), and
that the class is registered so that a pipeline can name it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from typing import Any, ClassVar

import pytest
import torch

from proxynas.errors import ArchError, ConfigError
from proxynas.spaces import SEARCH_SPACES
from proxynas.spaces.base import SearchSpace


class SearchSpaceContract:
    """Inherited tests for ``space``; override the class attributes to fit a space."""

    #: the instance under test (small settings keep ``build`` fast)
    space: ClassVar[SearchSpace]
    #: inputs ``build`` is checked with
    in_channels: ClassVar[int] = 3
    num_classes: ClassVar[int] = 5
    image_size: ClassVar[int] = 8
    batch_size: ClassVar[int] = 2
    #: how many sampled archs the sampling, codec and build tests use
    num_samples: ClassVar[int] = 12
    num_built: ClassVar[int] = 3
    #: ``enumerate`` is listed in full up to this size, else only its first archs are checked
    enumerate_limit: ClassVar[int] = 20_000
    #: strings (and non-strings) that are no arch of any space; add space-specific near misses
    junk: ClassVar[tuple[Any, ...]] = ("", "not an arch", "|||", "+", "a=b", "\n", 42, None, ("x", 0))

    @classmethod
    def plugin_type(cls) -> type:
        """The registered class this subclass tests."""
        return type(cls.space)

    # -- helpers --------------------------------------------------------------------

    def archs(self, n: int | None = None, seed: int = 0) -> list[str]:
        return self.space.sample(min(n or self.num_samples, self.space.size()), seed=seed)

    def build(self, arch: str) -> torch.nn.Module:
        return self.space.build(
            arch, in_channels=self.in_channels, num_classes=self.num_classes, image_size=self.image_size
        )

    def images(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.randn(self.batch_size, self.in_channels, self.image_size, self.image_size, generator=g)

    # -- registry and settings ----------------------------------------------------

    def test_registered_and_constructed_back_by_name(self):
        cls = type(self.space)
        assert self.space.name in SEARCH_SPACES, f"{cls.__name__} is not registered in SEARCH_SPACES"
        assert SEARCH_SPACES.get(self.space.name) is cls
        settings = {f.name: getattr(self.space, f.name) for f in dataclasses.fields(self.space)}
        again = SEARCH_SPACES.get(self.space.name)(**settings)
        assert again == self.space and hash(again) == hash(self.space)
        assert again.sample(3, seed=0) == self.space.sample(3, seed=0)
        assert isinstance(SEARCH_SPACES.get(self.space.name)(), SearchSpace)  # the defaults are valid

    def test_frozen_and_hashable(self):
        assert dataclasses.is_dataclass(self.space) and type(self.space).__dataclass_params__.frozen
        assert hash(self.space) == hash(dataclasses.replace(self.space))
        for field in dataclasses.fields(self.space):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(self.space, field.name, getattr(self.space, field.name))

    # -- validate -------------------------------------------------------------------

    def test_validate_returns_the_canonical_string(self):
        for arch in self.archs():
            assert isinstance(arch, str)
            assert self.space.validate(arch) == arch
            assert self.space.validate(self.space.validate(arch)) == arch

    def test_validate_rejects_junk_in_one_line(self):
        for junk in self.junk:
            try:
                got = self.space.validate(junk)
            except ArchError as exc:  # any other exception fails the test
                message = str(exc)
            else:
                pytest.fail(f"validate({junk!r}) accepted it and returned {got!r}; expected an ArchError")
            assert message and "\n" not in message, f"{junk!r}: {message!r}"

    # -- sample ----------------------------------------------------------------------

    def test_sample_is_seeded_distinct_and_inside(self):
        n = min(self.num_samples, self.space.size())
        first = self.space.sample(n, seed=0)
        assert len(first) == n == len(set(first))
        assert self.space.sample(n, seed=0) == first
        assert all(self.space.validate(a) == a for a in first)
        if self.space.size() > 2 * n:
            assert self.space.sample(n, seed=1) != first
        assert self.space.sample(0, seed=0) == []

    def test_sample_refuses_bad_sizes(self):
        for n in (-1, self.space.size() + 1, 2.0, True):
            with pytest.raises(ConfigError):
                self.space.sample(n, seed=0)

    # -- codec -----------------------------------------------------------------------

    def test_encode_decode_round_trip(self):
        for arch in self.archs():
            code = self.space.encode(arch)
            assert isinstance(code, tuple) and all(isinstance(c, int) for c in code)
            assert self.space.decode(code) == arch
            assert self.space.decode(list(code)) == arch
            assert self.space.encode(self.space.decode(code)) == code

    def test_cardinalities_match_codes(self):
        cards = self.space.cardinalities()
        assert cards and all(isinstance(n, int) and n >= 1 for n in cards)
        assert math.prod(cards) >= self.space.size()
        codes = [self.space.encode(a) for a in self.archs(100)]
        assert all(len(c) == len(cards) for c in codes)
        assert all(0 <= c < n for code in codes for c, n in zip(code, cards))
        # with enough draws every position takes more than one value (if it has more than one)
        for k, n in enumerate(cards):
            if n > 1 and self.space.size() >= 100:
                assert len({code[k] for code in codes}) > 1, f"position {k} never varies"

    def test_decode_rejects_codes_outside_the_cardinalities(self):
        cards = self.space.cardinalities()
        good = self.space.encode(self.archs(1)[0])
        for bad in (good[:-1], good + (0,), (cards[0],) + good[1:], (-1,) + good[1:], 7, None):
            with pytest.raises(ArchError) as info:
                self.space.decode(bad)
            assert "\n" not in str(info.value)

    # -- enumerate -------------------------------------------------------------------

    def test_enumerate_agrees_with_size(self):
        size = self.space.size()
        assert isinstance(size, int) and size >= 1
        if size <= self.enumerate_limit:
            archs = list(self.space.enumerate())
            assert len(archs) == len(set(archs)) == size
            assert set(self.archs()) <= set(archs)
            assert list(self.space.enumerate()) == archs  # a fixed order
        else:
            archs = list(itertools.islice(self.space.enumerate(), self.enumerate_limit))
            assert len(archs) == len(set(archs)) == self.enumerate_limit
        assert all(self.space.validate(a) == a for a in archs[:: max(1, len(archs) // 200)])

    # -- networks --------------------------------------------------------------------

    def test_build_gives_logits_and_features(self):
        x = self.images()
        for arch in self.archs(self.num_built):
            net = self.build(arch)
            assert isinstance(net, torch.nn.Module)
            logits = net(x)
            assert logits.shape == (self.batch_size, self.num_classes)
            assert torch.isfinite(logits).all()
            feats = net.forward_features(x)
            assert len(feats) >= 2, f"{arch}: forward_features gave {len(feats)} maps, expected F_0 and a block"
            for f in feats:
                assert f.dim() == 4 and f.shape[0] == self.batch_size
            last = net.forward_before_global_avg_pool(x)
            assert last.dim() == 4 and last.shape[0] == self.batch_size

    def test_features_are_differentiable_from_f0(self):
        arch = self.archs(1)[0]
        net = self.build(arch)
        x = self.images().requires_grad_(True)
        feats = net.forward_features(x)
        (grad,) = torch.autograd.grad(feats[-1].sum(), feats[0])
        assert grad.shape == feats[0].shape

    def test_num_params_counts_the_built_network(self):
        for arch in self.archs(self.num_built):
            kwargs = {"in_channels": self.in_channels, "num_classes": self.num_classes, "image_size": self.image_size}
            n = self.space.num_params(arch, **kwargs)
            assert isinstance(n, int) and n > 0
            assert n == sum(p.numel() for p in self.build(arch).parameters() if p.requires_grad)

    def test_a_network_built_for_training_trains_as_the_built_one(self):
        # build_for_training may skip work, never change what training computes: equal logits, equal
        # gradients (a parameter it leaves without one has a zero gradient in the built network),
        # equal logits again after SGD steps with weight decay
        x = self.images()
        y = torch.arange(self.batch_size) % self.num_classes
        sizes = {"in_channels": self.in_channels, "num_classes": self.num_classes, "image_size": self.image_size}
        for arch in self.archs(self.num_samples):
            nets = []
            for build in (self.space.build, self.space.build_for_training):
                torch.manual_seed(0)
                nets.append(build(arch, **sizes).train())
            built, trained = nets
            opts = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4) for n in nets]
            for step in range(3):
                outs = [n(x) for n in nets]
                assert torch.equal(outs[0], outs[1]), f"{arch}: logits differ at step {step}"
                for opt, out in zip(opts, outs):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(out, y).backward()
                for (name, p), q in zip(built.named_parameters(), trained.parameters()):
                    expected = p.grad if p.grad is not None else torch.zeros_like(p)
                    got = q.grad if q.grad is not None else torch.zeros_like(q)
                    assert torch.equal(got, expected), f"{arch} {name}: gradients differ at step {step}"
                for opt in opts:
                    opt.step()

    def test_a_network_computes_the_same_channels_last(self):
        # trains_channels_last only changes the memory layout: logits and gradients agree up to rounding
        assert isinstance(type(self.space).trains_channels_last, bool)
        x = self.images()
        for arch in self.archs(self.num_built):
            torch.manual_seed(0)
            nchw = self.build(arch).train()
            nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
            out, out_cl = nchw(x), nhwc(x.contiguous(memory_format=torch.channels_last))
            torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-5)
            out.square().sum().backward()
            out_cl.square().sum().backward()
            # relative to the network's largest gradient: normalising over a tiny batch amplifies rounding,
            # and a bias that a norm layer cancels has a gradient of pure rounding
            scale = max(float(p.grad.abs().max()) for p in nchw.parameters())
            for (name, p), q in zip(nchw.named_parameters(), nhwc.parameters()):
                error = float((q.grad - p.grad).abs().max())
                assert error <= 1e-3 * scale, f"{arch} {name}: gradients differ by {error} (largest gradient {scale})"
