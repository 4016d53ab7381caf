"""In-memory image datasets shared by every stage.

Images are float32 tensors ``[N, C, H, W]`` already normalised with the
dataset's channel ``mean``/``std``; labels are int64 ``[N]`` in ``0..K-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ImageData:
    """A labelled set of normalised images (one split, or a distilled summary)."""

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise ValueError(f"labels must be [N] with N={len(self.x)}, got shape {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, index: torch.Tensor) -> "ImageData":
        return ImageData(self.x[index], self.y[index], self.classes, self.mean, self.std)

    def of_class(self, k: int) -> torch.Tensor:
        """Images of class ``k``."""
        return self.x[self.y == k]

    def denormalize(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Pixels back in ``[0, 1]`` (for image grids)."""
        x = self.x if x is None else x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)


@dataclass(frozen=True)
class DatasetSplits:
    """Seeded train / validation / test splits of one dataset."""

    name: str
    train: ImageData
    val: ImageData
    test: ImageData
    info: dict = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape
