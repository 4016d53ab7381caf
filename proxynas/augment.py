"""Differentiable Siamese Augmentation (DSA): A(x, omega), the augmentation of training and of the distillers.

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation"
(ICML 2021). Every transform A(x, omega) is written with differentiable torch
ops so d A(s, omega) / d s exists for the synthetic images s, and is *siamese*:
the real and the synthetic batch go through the same sampled omega,
which the caller obtains by passing the same ``seed``. As in the paper's
released code, one omega is shared by the whole batch when matching, so
batches of different sizes (256 real vs. ipc synthetic) see the same
transform; ``per_sample=True`` draws one omega per image instead, which is how
the paper augments when *training* a network on a summary.

:class:`DSA` holds the parameters (the paper code's ``ParamDiffAug``),
:data:`TRANSFORMS` the transforms, and ``DSA(...)(x, seed)`` draws omega
from ``seed`` through :class:`Draws`. For a given omega every transform
computes what the released code's does (github.com/VICO-UoE/DatasetCondensation,
``utils.py``; checked by ``tests/distill/test_golden.py``), and draws it
from the same range; only the order of the draws differs. Used by
:mod:`proxynas.training` (``augment: dsa``) and by the distillers (DC/DSA,
DCC, IDC, DM, MTT, TESLA, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from proxynas.device import to_device_async
from proxynas.fields import Checked, checked

__all__ = [
    "DEFAULT_STRATEGY",
    "DSA",
    "Draws",
    "MODES",
    "TRANSFORMS",
    "Transform",
    "check_strategy",
    "strategy_parts",
]


class Draws:
    """Where one call's omega comes from: a seeded CPU generator, one value per image or one per batch.

    Transforms ask this object for their random parameters instead of
    holding a generator, so a caller can hand them chosen omegas (a subclass
    overriding :meth:`units` / :meth:`integers`): that is how the golden
    tests compare each transform with the released code for equal omega.
    Values are drawn on the CPU, so CUDA and CPU runs agree.
    """

    def __init__(self, generator: torch.Generator, per_sample: bool) -> None:
        self.generator = generator
        self.per_sample = per_sample

    def count(self, x: torch.Tensor) -> int:
        """How many omegas a transform of ``x`` draws: one per image, or one shared by the batch."""
        return len(x) if self.per_sample else 1

    def units(self, n: int) -> torch.Tensor:
        """``n`` float64 draws from U[0, 1) (CPU), the raw material of :meth:`uniform`."""
        return torch.rand(n, generator=self.generator, dtype=torch.float64)

    def uniform(self, x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """omega ~ U[low, high), shaped ``[n, 1, 1, 1]`` on ``x``'s device to broadcast over images."""
        n = self.count(x)
        u = low + (high - low) * self.units(n)
        return to_device_async(u.to(x.dtype), x.device).view(n, 1, 1, 1)

    def integers(self, x: torch.Tensor, low: int, high: int) -> torch.Tensor:
        """Integer omega ~ U{low, ..., high - 1}, per image or per batch (CPU, int64 ``[n]``)."""
        return torch.randint(low, high, (self.count(x),), generator=self.generator)


# A transform: (images, settings, omega source) -> transformed images.
Transform = Callable[[torch.Tensor, "DSA", Draws], torch.Tensor]


def _brightness(x: torch.Tensor, aug: "DSA", draws: Draws) -> torch.Tensor:
    """DSA "color": x + b, b ~ U[-brightness/2, brightness/2)."""
    return x + (draws.uniform(x) - 0.5) * aug.brightness


def _saturation(x: torch.Tensor, aug: "DSA", draws: Draws) -> torch.Tensor:
    """DSA "color": scale each pixel's deviation from its mean over channels by s ~ U[0, saturation)."""
    gray = x.mean(dim=1, keepdim=True)
    return (x - gray) * draws.uniform(x, 0.0, aug.saturation) + gray


def _contrast(x: torch.Tensor, aug: "DSA", draws: Draws) -> torch.Tensor:
    """DSA "color": scale each image's deviation from its mean by c ~ U[contrast, 1 + contrast)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * draws.uniform(x, aug.contrast, 1.0 + aug.contrast) + mean


def _crop(x: torch.Tensor, aug: "DSA", draws: Draws) -> torch.Tensor:
    """DSA "crop": translate by up to ``ratio_crop_pad`` of the size, zero-filling.

    Written as zero-padding then an index gather, so gradients reach every
    pixel that stays in the frame.
    """
    n, h, w = len(x), x.shape[-2], x.shape[-1]
    ph, pw = int(h * aug.ratio_crop_pad + 0.5), int(w * aug.ratio_crop_pad + 0.5)
    dy = to_device_async(draws.integers(x, -ph, ph + 1), x.device).expand(n)
    dx = to_device_async(draws.integers(x, -pw, pw + 1), x.device).expand(n)
    padded = F.pad(x, (pw, pw, ph, ph))
    rows = (torch.arange(h, device=x.device) + ph + dy[:, None])[:, None, :, None]  # [n, 1, h, 1]
    cols = (torch.arange(w, device=x.device) + pw + dx[:, None])[:, None, None, :]  # [n, 1, 1, w]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def _cutout(x: torch.Tensor, aug: "DSA", draws: Draws) -> torch.Tensor:
    """DSA "cutout" (DeVries & Taylor 2017): zero a square of side ``ratio_cutout`` x size, clipped at the border.

    The square's centre row is uniform in ``0 .. h - 1`` for an odd side and
    in ``0 .. h`` for an even one (likewise for columns), as in the released
    code (``rand_cutout``): an even square's centre sits between pixels, so
    the extra position makes the clipped squares at the two borders
    equally large.
    """
    h, w = x.shape[-2:]
    ch, cw = int(h * aug.ratio_cutout + 0.5), int(w * aug.ratio_cutout + 0.5)
    top = to_device_async(draws.integers(x, 0, h + 1 - ch % 2) - ch // 2, x.device)[:, None]  # [n, 1]
    left = to_device_async(draws.integers(x, 0, w + 1 - cw % 2) - cw // 2, x.device)[:, None]
    ys, xs = torch.arange(h, device=x.device)[None, :], torch.arange(w, device=x.device)[None, :]
    in_rows = (ys >= top) & (ys < top + ch)  # [n, h]
    in_cols = (xs >= left) & (xs < left + cw)  # [n, w]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # [n, h, w]
    return x * keep[:, None].to(x.dtype)


def _flip(x: torch.Tensor, aug: "DSA", draws: Draws) -> torch.Tensor:
    """DSA "flip": mirror horizontally with probability ``prob_flip``."""
    return torch.where(draws.uniform(x) < aug.prob_flip, x.flip(-1), x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` through 2x3 affines ``theta`` ``[n, 2, 3]`` (Jaderberg et al. 2015 spatial transformer)."""
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _scale(x: torch.Tensor, aug: "DSA", draws: Draws) -> torch.Tensor:
    """DSA "scale": theta = [[sx, 0, 0], [0, sy, 0]], sx, sy ~ U[1/ratio_scale, ratio_scale)."""
    r = aug.ratio_scale
    sx, sy = draws.uniform(x, 1.0 / r, r).flatten(), draws.uniform(x, 1.0 / r, r).flatten()
    zero = torch.zeros_like(sx)
    return _affine(x, torch.stack([sx, zero, zero, zero, sy, zero], dim=1).view(-1, 2, 3))


def _rotate(x: torch.Tensor, aug: "DSA", draws: Draws) -> torch.Tensor:
    """DSA "rotate": theta = [[cos a, -sin a, 0], [sin a, cos a, 0]], a ~ U[-ratio_rotate, ratio_rotate) degrees.

    The sign convention is the released code's (``rand_rotate``), so a
    given a turns the image the same way there and here.
    """
    a = torch.deg2rad(draws.uniform(x, -aug.ratio_rotate, aug.ratio_rotate).flatten())
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return _affine(x, torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3))


# Strategy part -> the transforms it applies, in order ("color" is three, as in DSA).
TRANSFORMS: dict[str, tuple[Transform, ...]] = {
    "color": (_brightness, _saturation, _contrast),
    "crop": (_crop,),
    "cutout": (_cutout,),
    "flip": (_flip,),
    "scale": (_scale,),
    "rotate": (_rotate,),
}

# "one": each call applies one part drawn uniformly (the released DSA/DM default,
# aug_mode "S"); "all": each call applies every part in order (aug_mode "M").
MODES = ("one", "all")

#: every part, in the paper's order (its released code's default strategy)
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


def strategy_parts(strategy: str) -> tuple[str, ...]:
    """The transform names of ``"_"``-joined ``strategy``, in order (empty for ``"none"``)."""
    if strategy in ("", "none"):
        return ()
    return tuple(strategy.split("_"))


def check_strategy(strategy: str) -> None:
    """Raise ValueError naming the allowed transforms unless every part of ``strategy`` is one."""
    unknown = [p for p in strategy_parts(strategy) if p not in TRANSFORMS]
    if unknown:
        raise ValueError(
            f"unknown DSA transform {unknown[0]!r} in strategy {strategy!r}; "
            f"choose from: {', '.join(TRANSFORMS)} (joined by '_'), or 'none'"
        )


@dataclass(frozen=True)
class DSA(Checked):
    """Siamese differentiable augmentation; ``DSA()(x, seed)`` with the same seed on real and synthetic.

    Defaults are the DSA paper's (Zhao & Bilen 2021, released code).
    ``strategy`` is ``"_"``-joined parts of :data:`TRANSFORMS`, or ``"none"``.
    ``per_sample``: one omega per image (for training on a summary) instead of
    one per batch (for matching, where it keeps real and synthetic siamese).
    """

    strategy: str = checked(DEFAULT_STRATEGY, check=check_strategy)
    mode: str = checked("one", choices=MODES)
    prob_flip: float = checked(0.5, ge=0, le=1)
    per_sample: bool = checked(False)
    ratio_scale: float = checked(1.2, ge=1)
    ratio_rotate: float = checked(15.0, ge=0)
    ratio_crop_pad: float = checked(0.125, ge=0)
    ratio_cutout: float = checked(0.5, ge=0)
    brightness: float = checked(1.0, ge=0)
    saturation: float = checked(2.0, ge=0)
    contrast: float = checked(0.5, ge=0)

    @property
    def parts(self) -> tuple[str, ...]:
        """The strategy's transform names, in order (empty for ``"none"``)."""
        return strategy_parts(self.strategy)

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """A(x, omega) of Zhao & Bilen 2021 (sec. 3, siamese augmentation), with omega drawn from ``seed``.

        omega is sampled from a CPU ``torch.Generator`` seeded with ``seed``, so
        equal seeds give equal transforms on any device and, unless
        ``per_sample``, for any batch size (the siamese property);
        gradients flow back to ``x``.
        """
        if not self.parts:
            return x
        g = torch.Generator().manual_seed(int(seed))
        if self.mode == "one":
            parts = (self.parts[int(torch.randint(0, len(self.parts), (), generator=g))],)
        else:
            parts = self.parts
        draws = Draws(g, self.per_sample)
        for part in parts:
            for transform in TRANSFORMS[part]:
                x = transform(x, self, draws)
        return x
