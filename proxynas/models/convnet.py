"""The ConvNet of the dataset-condensation literature.

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching" (ICLR 2021),
appendix, after Gidaris & Komodakis, "Dynamic Few-Shot Visual Learning
without Forgetting" (CVPR 2018): ``depth`` blocks of
``Conv3x3(width) -> norm -> act -> pool`` followed by one ``Linear`` classifier.
Every distiller embeds images with it and the 720-ConvNet search space is
built from its ``width / depth / act / norm / pool`` choices, so each choice is
a row of a small table rather than a branch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# (channels, height, width) of the feature map a norm layer sees -> the layer.
NormFactory = Callable[[int, int, int], nn.Module]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": lambda: nn.ReLU(inplace=True),
    # DC uses the PyTorch default slope 0.01.
    "leakyrelu": lambda: nn.LeakyReLU(negative_slope=0.01),
}

NORMS: dict[str, NormFactory] = {
    "none": lambda c, h, w: nn.Identity(),
    "batchnorm": lambda c, h, w: nn.BatchNorm2d(c, affine=True),
    # DC normalises over the whole (C, H, W) feature map of one sample.
    "layernorm": lambda c, h, w: nn.LayerNorm([c, h, w], elementwise_affine=True),
    # DC's "instancenorm" is GroupNorm with one group per channel: identical
    # statistics to InstanceNorm2d but with a per-channel affine.
    "instancenorm": lambda c, h, w: nn.GroupNorm(c, c, affine=True),
    # DC's groupnorm uses 4 groups; fall back to 1 group when 4 does not divide C.
    "groupnorm": lambda c, h, w: nn.GroupNorm(4 if c % 4 == 0 else 1, c, affine=True),
}

POOLS: dict[str, Callable[[], nn.Module] | None] = {
    "none": None,
    "maxpool": lambda: nn.MaxPool2d(kernel_size=2, stride=2),
    "avgpool": lambda: nn.AvgPool2d(kernel_size=2, stride=2),
}


def _choice(table: dict, kind: str, value: str):
    """Look ``value`` up in a choice table, naming the allowed values on a miss."""
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(table)}") from None


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


class ConvNet(nn.Module):
    """``depth`` x [Conv3x3(width) -> norm -> act -> pool] -> Linear.

    Zhao et al. 2021 (DC), appendix "ConvNet"; Gidaris & Komodakis 2018. The
    2x2 pools halve the feature map until it is 1x1 and are skipped after that,
    so any ``image_size`` from 8 to 32 works with any depth (8x8 at depth 3
    ends at 1x1, 32x32 at 4x4).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        width: int = 128,
        depth: int = 3,
        act: str = "relu",
        norm: str = "instancenorm",
        pool: str = "avgpool",
    ) -> None:
        super().__init__()
        _positive("in_channels", in_channels)
        _positive("num_classes", num_classes)
        _positive("width", width)
        _positive("depth", depth)
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        _positive("image_size", h)
        _positive("image_size", w)
        make_act = _choice(ACTIVATIONS, "act", act)
        make_norm = _choice(NORMS, "norm", norm)
        make_pool = _choice(POOLS, "pool", pool)

        layers: list[nn.Module] = []
        block_ends: list[int] = []
        channels = in_channels
        for _ in range(depth):
            # padding=1 keeps the spatial size, so only pooling shrinks it.
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), make_norm(width, h, w), make_act()]
            channels = width
            if make_pool is not None and h >= 2 and w >= 2:
                layers.append(make_pool())
                h, w = h // 2, w // 2
            block_ends.append(len(layers))
        self.features = nn.Sequential(*layers)
        #: ``features[block_ends[k-1]:block_ends[k]]`` is block k: conv-norm-act[-pool]
        self.block_ends = tuple(block_ends)
        self.embed_dim = width * h * w
        self.feature_shape = (width, h, w)
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier, ``[N, embed_dim]``.

        This is the embedding psi_theta of Zhao & Bilen 2023 (DM), eq. 4.
        """
        return self.features(x).flatten(1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """F_0..F_depth: the input images, then the output of each conv-norm-act[-pool] block.

        The per-block feature maps zero-cost proxies read (e.g. AZ-NAS);
        ``forward_features(x)[-1]`` is ``features(x)``.
        """
        feats, start = [x], 0
        for end in self.block_ends:
            out = feats[-1]
            for layer in self.features[start:end]:
                out = layer(out)
            feats.append(out)
            start = end
        return feats

    def forward_before_global_avg_pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``[N, width, h, w]`` before the head.

        Named as in NASLib for networks with a global pool; the DC ConvNet has
        none (its classifier reads the flattened map), so this is ``features(x)``.
        """
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, num_classes]`` = Linear(embed(x)) (Zhao et al. 2021, appendix)."""
        return self.classifier(self.embed(x))
