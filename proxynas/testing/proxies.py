"""The contract every proxy meets, as a pytest suite a proxy's test subclasses.

A proxy is tested by one subclass naming one fast instance::

    from proxynas.testing.proxies import ProxyContract

    class TestSnipContract(ProxyContract):
        proxy = SnipProxy()

The class is not named ``Test...`` so pytest collects only its subclasses. The
proxy scores a small population of archs once per subclass (a class-scoped
fixture) and every test reads those scores.

Optional class attributes:

* ``space`` (default :data:`SPACE`, a 4-channel one-cell-per-stage NB201) and
  ``archs``, the population scored (default :data:`ARCH`, :data:`ALL_CONV`,
  :data:`ALL_NONE`);
* ``splits``: the data (default :func:`make_data`, 40 noise images of 10 classes);
* ``finite_archs``: archs of ``archs`` whose score must be finite (default the
  connected cells :data:`ARCH` and :data:`ALL_CONV`). Any score may be
  ``-inf``, "predicted the worst" (NASWOT's singular kernel of a
  disconnected cell), but never NaN or ``+inf``;
* ``better`` / ``worse``: two archs of ``archs`` the proxy must rank in that
  order, which is how the test checks that *higher is better* (default: the
  all-convolution cell above the disconnected all-``none`` cell, which outputs
  zeros and so cannot be predicted the better network);
* ``direction_unchecked``: a non-empty reason skips that check for a proxy
  whose order the test cannot know (set it only with the reason why).

The tiny data and NB201 archs here are also what the proxies' own tests use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import pytest
import torch

from proxynas.data.types import DatasetSplits, ImageData
from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.spaces.base import SearchSpace
from proxynas.spaces.nb201 import NB201Space
from proxynas.testing.plugins import assert_cites_a_paper, assert_registered

__all__ = [
    "ALL_CONV",
    "ALL_NONE",
    "ARCH",
    "SPACE",
    "ProxyContract",
    "Scores",
    "make_ctx",
    "make_data",
    "separable_data",
]

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
SPACE = NB201Space(channels=4, cells_per_stage=1)


def make_data(channels: int = 3, n: int = 40, seed: int = 0, size: int = 8) -> DatasetSplits:
    """``n`` standard-normal images of ``size`` x ``size``, labels cycling over 10 classes (one set for every split)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=g)
    y = torch.arange(n) % 10
    data = ImageData(x, y, tuple(str(k) for k in range(10)), (0.0,) * channels, (1.0,) * channels)
    return DatasetSplits("synthetic", data, data, data)


def separable_data(
    classes: int = 3, per_class: int = 16, channels: int = 3, size: int = 8, seed: int = 0
) -> DatasetSplits:
    """Learnable splits: a fixed random pattern per class plus pixel noise, fresh noise in each split.

    A network that uses its input learns it in a few epochs; one that cannot
    (a disconnected cell) stays at chance, so a training proxy's order is checkable.
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, channels, size, size, generator=g)
    names = tuple(f"c{k}" for k in range(classes))

    def split() -> ImageData:
        y = torch.arange(classes).repeat(per_class)
        x = centres[y] + 0.5 * torch.randn(len(y), channels, size, size, generator=g)
        return ImageData(x, y, names, (0.0,) * channels, (1.0,) * channels)

    return DatasetSplits("separable", split(), split(), split())


def make_ctx(data: DatasetSplits, seed: int = 0, space: SearchSpace = SPACE) -> ProxyContext:
    """A CPU context scoring on ``data.train``."""
    return ProxyContext(space=space, dataset=data, train_data=data.train, device=torch.device("cpu"), seed=seed)


@dataclass
class Scores:
    """What the class-scoped fixture computed once for one proxy."""

    raw: dict[str, Any]  # arch -> score() (components for a combining proxy)
    again: Any  # score() of the first arch, repeated
    values: list[float]  # combine() of the population, in ``archs`` order


class ProxyContract:
    """Inherited tests for one proxy instance; subclasses set :attr:`proxy`."""

    #: the fast instance under test (required)
    proxy: ClassVar[Proxy]
    space: ClassVar[SearchSpace] = SPACE
    archs: ClassVar[Sequence[str]] = (ARCH, ALL_CONV, ALL_NONE)
    #: ``None`` means :func:`make_data`
    splits: ClassVar[DatasetSplits | None] = None
    finite_archs: ClassVar[Sequence[str]] = (ARCH, ALL_CONV)
    better: ClassVar[str] = ALL_CONV
    worse: ClassVar[str] = ALL_NONE
    #: why the higher-is-better check cannot apply to this proxy; empty = it is checked
    direction_unchecked: ClassVar[str] = ""
    #: how far an arch's values may move when :meth:`Proxy.score_batch` scores it with
    #: others (0: exactly equal; a proxy training archs fused states its float tolerance)
    batch_tolerance: ClassVar[float] = 0.0

    @classmethod
    def plugin_type(cls) -> type:
        """The registered class this subclass tests."""
        return type(cls.proxy)

    # -- fixtures ---------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def scorer(cls) -> Proxy:
        proxy = getattr(cls, "proxy", None)
        assert isinstance(proxy, Proxy), f"{cls.__name__} must set `proxy = <a Proxy instance>`"
        return proxy

    @pytest.fixture(scope="class")
    @classmethod
    def ctx(cls) -> ProxyContext:
        return make_ctx(cls.splits if cls.splits is not None else make_data(), seed=0, space=cls.space)

    @pytest.fixture(scope="class")
    @classmethod
    def scores(cls, scorer: Proxy, ctx: ProxyContext) -> Scores:
        """The population's scores, computed once per subclass."""
        archs = list(cls.archs)
        raw = {arch: scorer.score(arch, ctx) for arch in archs}
        again = scorer.score(archs[0], ctx)
        return Scores(raw, again, list(scorer.combine([raw[a] for a in archs])))

    # -- scores -----------------------------------------------------------------------

    def test_score_is_a_number_and_finite_for_connected_archs(self, scorer, scores):
        for arch, raw in scores.raw.items():
            if scorer.combines:
                assert isinstance(raw, dict) and raw, f"a combining proxy scores named components, got {raw!r}"
                assert all(isinstance(k, str) for k in raw)
                numbers = list(raw.values())
            else:
                numbers = [raw]
            assert all(isinstance(v, float) for v in numbers), (arch, raw)
            assert all(_ordered(v) for v in numbers), f"{arch}: {raw} (NaN and +inf rank nothing)"
            if arch in self.finite_archs:
                assert all(math.isfinite(v) for v in numbers), (arch, raw)

    def test_score_is_deterministic_for_a_seed(self, scores):
        assert scores.again == scores.raw[self.archs[0]]

    def test_scores_single_channel_images(self, scorer):
        raw = scorer.score(self.archs[0], make_ctx(make_data(channels=1), seed=0, space=self.space))
        (value,) = scorer.combine([raw])
        assert isinstance(value, float) and (math.isfinite(value) or self.archs[0] not in self.finite_archs)

    def test_combine_gives_one_value_per_arch(self, scorer, scores):
        values = scores.values
        assert len(values) == len(self.archs), f"combine() of {len(self.archs)} archs gave {len(values)} values"
        assert all(isinstance(v, float) and _ordered(v) for v in values), values
        assert all(math.isfinite(v) for a, v in zip(self.archs, values) if a in self.finite_archs), values
        if not scorer.combines:  # a plain proxy's value is its score
            assert values == [scores.raw[a] for a in self.archs]
        alone = scorer.combine([scores.raw[self.archs[0]]])
        assert len(alone) == 1 and isinstance(alone[0], float) and _ordered(alone[0])

    def test_higher_is_better(self, scores):
        if self.direction_unchecked:
            pytest.skip(self.direction_unchecked)
        assert self.better in self.archs and self.worse in self.archs
        archs = list(self.archs)
        better, worse = scores.values[archs.index(self.better)], scores.values[archs.index(self.worse)]
        assert better > worse, f"{self.better} should score above {self.worse}: {better} vs {worse}"

    def test_scoring_archs_together_gives_each_its_own_values(self, scorer, ctx):
        archs = list(self.archs)
        if scorer.combines:
            return  # a combining proxy's population is scored one arch at a time (evaluation.chunks)
        together = scorer.score_batch(archs, ctx)
        assert len(together) == len(archs), f"score_batch of {len(archs)} archs gave {len(together)} results"
        for arch, scored in zip(archs, together):
            alone = scorer.score_values(arch, ctx)
            assert list(scored.values) == list(alone.values), arch
            for name, value in alone.values.items():
                assert scored.values[name] == pytest.approx(value, abs=self.batch_tolerance, nan_ok=True), (arch, name)
            assert len(scored.curve) == len(alone.curve), arch
        assert scorer.archs_per_scoring() >= 1

    # -- identity ---------------------------------------------------------------------

    def test_registered_and_rebuilt_from_its_config(self, scorer):
        assert_registered(scorer, PROXIES, Proxy)

    def test_has_a_unit(self, scorer):
        assert isinstance(type(scorer).unit, str) and type(scorer).unit.strip(), "name what the score means"

    def test_every_setting_has_a_default(self, scorer):
        assert isinstance(type(scorer)(), type(scorer))

    def test_docstring_cites_a_paper(self, scorer):
        assert_cites_a_paper(type(scorer))


def _ordered(value: float) -> bool:
    """A value a ranking can place: finite, or -inf for "the worst"."""
    return not math.isnan(value) and value != math.inf
