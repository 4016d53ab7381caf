"""ZCA whitening of a dataset: fitted on the training split, applied to every split and summary.

Several distillation papers whiten CIFAR before distilling and evaluating:
KIP (Nguyen et al., ICLR 2021; NeurIPS 2021), FRePo (Zhou et al., NeurIPS
2022), MTT (Cazenavette et al., CVPR 2022, and its released code),
TESLA (Cui et al., ICML 2023, built on MTT's code) and RFAD (Loo et al.,
NeurIPS 2022). With ``f(x)`` an image flattened to ``d = C*H*W`` features of
the fit space (below), ``mu`` the training mean of ``f`` and the training
covariance ``Sigma = U diag(s) U^T``, ZCA (the symmetric root, so the
whitened image stays an image) is::

    z = (f(x) - mu) W,        W     = U diag((s + r)^(-1/2)) U^T
    f(x) = z W^-1 + mu,       W^-1  = U diag((s + r)^(+1/2)) U^T

where ``r`` regularises the small eigenvalues: ``eps`` itself
(``regularization="absolute"``) or ``eps * tr(Sigma) / d`` (``"relative"``).
The whitened training covariance is ``U diag(s / (s + r)) U^T``: the identity
on directions whose variance is well above ``r``, shrunk on the rest.

The papers' released code differs in four places; each is a setting of
:class:`ZCA`, and the defaults are MTT's (the implementation TESLA reuses):

============  ==========================  ==================  ==================  ==================
setting       MTT / TESLA                 FRePo               KIP                 RFAD
============  ==========================  ==================  ==================  ==================
fit_on        ``pixels`` in [0, 1]        ``normalized``      ``normalized``      ``normalized``
layer_norm    no                          no                  yes                 no (SVHN only)
center        yes                         yes                 no                  no
eps           0.1, ``absolute``           0.1, ``relative``   0.1, ``relative``   0.1, ``relative``
============  ==========================  ==================  ==================  ==================

Sources: MTT, ``GeorgeCazenavette/mtt-distillation`` ``utils.py``
``get_dataset``: with ``--zca`` the images are only ``ToTensor()``-ed (not
normalised) and ``kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)`` is
fitted on the training set (kornia adds ``eps`` to the eigenvalues of the
``N - 1`` covariance). FRePo, ``yongchaoz/FRePo`` ``lib/dataset/ops.py``
(``compute_zca_mean_cov_ds``, ``get_whitening_transform``) with
``zca_reg = 0.1`` from ``script/distill.py``. KIP,
``google-research/google-research`` ``kip/nn_training.ipynb`` (preprocess
utilities: ``layer_norm=True``, i.e. each flattened image centred and scaled
to unit L2 norm, covariance without mean subtraction, ``zca_reg = 0.1``).
RFAD, ``yolky/RFAD`` ``data.py`` ``get_zca_matrix(reg_coef=0.1)``.
:data:`RELEASED_SETTINGS` names these four combinations.

Two small differences are not settings: the covariance here always divides
by ``N - 1`` (kornia's choice; FRePo, KIP and RFAD divide by ``N``, which
scales their whitened images by ``sqrt(N / (N - 1))``, 1.00001 on CIFAR-10),
and FRePo/KIP leave the eigen-directions past the ``N``-th unscaled when
there are fewer images than features ("rank control"), a case CIFAR never
meets. The fit is on the training split only (MTT fits on all 50,000
training images; here the validation images stay out of it), in float64
with a symmetric eigen-decomposition, so the same images give the same
matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Mapping

import torch

from proxynas.data.types import DatasetSplits, ImageData
from proxynas.fields import Checked, checked

__all__ = ["RELEASED_SETTINGS", "ZCA", "ZCAWhitening", "displayable", "whiten_splits", "whitening_of"]

#: the key of :attr:`DatasetSplits.info` holding the :class:`ZCAWhitening` of whitened splits
INFO_KEY = "zca"

#: the settings of each paper's released code (see the module doc)
RELEASED_SETTINGS: Mapping[str, Mapping[str, object]] = {
    "mtt": {"eps": 0.1, "regularization": "absolute", "fit_on": "pixels", "layer_norm": False, "center": True},
    "frepo": {"eps": 0.1, "regularization": "relative", "fit_on": "normalized", "layer_norm": False, "center": True},
    "kip": {"eps": 0.1, "regularization": "relative", "fit_on": "normalized", "layer_norm": True, "center": False},
    "rfad": {"eps": 0.1, "regularization": "relative", "fit_on": "normalized", "layer_norm": False, "center": False},
}

_CHUNK = 4096  # images per float64 block: bounds the memory of a 50k-image CIFAR fit


@dataclass(frozen=True)
class ZCA(Checked):
    """How to fit a ZCA whitening (the pipeline's ``zca:`` section); defaults are MTT's released code's.

    ``eps`` regularises the eigenvalues, added as is (``absolute``) or times
    the mean eigenvalue ``tr(Sigma) / d`` (``relative``). ``fit_on``: the
    features are the ``pixels`` in [0, 1] (the normalisation undone) or the
    per-channel ``normalized`` images. ``layer_norm``: each flattened image is
    first centred and scaled to unit L2 norm (KIP). ``center``: subtract the
    training mean of every feature before the covariance (KIP and RFAD use the
    uncentred second moment).
    """

    #: behaviour version, part of the cache key of the data it whitens
    version: ClassVar[str] = "1"

    eps: float = checked(0.1, gt=0)
    regularization: Literal["absolute", "relative"] = checked("absolute")
    fit_on: Literal["pixels", "normalized"] = checked("pixels")
    layer_norm: bool = checked(False)
    center: bool = checked(True)

    @classmethod
    def released(cls, paper: str) -> "ZCA":
        """The settings of ``paper``'s released code: ``mtt`` (also TESLA), ``frepo``, ``kip`` or ``rfad``."""
        if paper not in RELEASED_SETTINGS:
            raise ValueError(f"no released ZCA settings for {paper!r}; choose one of: {', '.join(RELEASED_SETTINGS)}")
        return cls(**RELEASED_SETTINGS[paper])

    def features(self, x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
        """Normalised images ``[N, C, H, W]`` as the float64 features ``f(x)`` ``[N, C*H*W]`` that are whitened."""
        out = x.to(torch.float64)
        if self.fit_on == "pixels":
            out = out * _per_channel(std, out) + _per_channel(mean, out)
        out = out.reshape(len(out), -1)
        if self.layer_norm:
            out = out - out.mean(dim=1, keepdim=True)
            norms = out.norm(dim=1, keepdim=True)
            # a constant image has no direction to keep; it stays the zero vector
            out = out / torch.where(norms > 0, norms, torch.ones_like(norms))
        return out

    def fit(self, train: ImageData) -> "ZCAWhitening":
        """The whitening of ``train``'s images (ValueError if they are fewer than two or have no variance)."""
        n, d = len(train), math.prod(train.shape)
        if n < 2:
            raise ValueError(f"ZCA needs at least two training images to estimate a covariance, got {n}")
        x = train.x.detach().cpu()
        center = torch.zeros(d, dtype=torch.float64)
        if self.center:
            for start in range(0, n, _CHUNK):
                center += self.features(x[start : start + _CHUNK], train.mean, train.std).sum(dim=0)
            center /= n
        cov = torch.zeros(d, d, dtype=torch.float64)
        for start in range(0, n, _CHUNK):
            part = self.features(x[start : start + _CHUNK], train.mean, train.std) - center
            cov += part.T @ part
        cov = (cov + cov.T) / (2 * (n - 1))  # exactly symmetric, as eigh assumes
        trace = float(cov.diagonal().sum())
        reg = self.eps if self.regularization == "absolute" else self.eps * trace / d
        if not reg > 0:
            raise ValueError("the training images have no variance; there is nothing to whiten")
        eigenvalues, basis = torch.linalg.eigh(cov)
        # round-off can leave tiny negative eigenvalues in a rank-deficient covariance
        spread = (eigenvalues.clamp_min(0.0) + reg).sqrt()
        return ZCAWhitening(
            settings=self,
            shape=train.shape,
            mean=tuple(train.mean),
            std=tuple(train.std),
            center=center,
            whitening=(basis / spread) @ basis.T,
            colouring=(basis * spread) @ basis.T,
            regularizer=reg,
        )


@dataclass(frozen=True, eq=False)
class ZCAWhitening:
    """A fitted ZCA whitening: :meth:`apply` whitens images, :meth:`inverse` undoes it.

    It maps *normalised* images (as every :class:`ImageData` holds them) to
    whitened ones and back, so a whitened :class:`ImageData` keeps the
    ``mean``/``std`` of the data it came from; the fit space (pixels or
    normalised values) is internal. Plain tensors and a frozen
    :class:`ZCA`, so it pickles into the pipeline's cache with the splits.
    """

    settings: ZCA
    #: ``(C, H, W)`` of the images it whitens
    shape: tuple[int, int, int]
    #: the per-channel normalisation of the images it was fitted on
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: ``mu`` (float64 ``[d]``; zeros when ``settings.center`` is off)
    center: torch.Tensor
    #: ``W`` and ``W^-1`` (float64 ``[d, d]``, symmetric)
    whitening: torch.Tensor
    colouring: torch.Tensor
    #: the ``r`` added to every eigenvalue
    regularizer: float

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[N, C, H, W]`` whitened, float32 on ``x``'s device."""
        self._check_shape(x)
        matrix = self.whitening.to(x.device)
        center = self.center.to(x.device)
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        with torch.no_grad():
            for start in range(0, len(x), _CHUNK):
                part = self.settings.features(x[start : start + _CHUNK], self.mean, self.std) - center
                out[start : start + _CHUNK] = (part @ matrix).view(-1, *self.shape).to(torch.float32)
        return out

    def unwhiten(self, z: torch.Tensor) -> torch.Tensor:
        """Whitened images back to normalised ones, float32 (with ``layer_norm``: up to each image's shift and scale)."""
        out = self._colour(z)
        if self.settings.fit_on == "pixels":
            out = (out - _per_channel(self.mean, out)) / _per_channel(self.std, out)
        return out.to(torch.float32)

    def apply(self, data: ImageData) -> ImageData:
        """``data`` with whitened images (ValueError if it is normalised otherwise than the fit's data)."""
        self._check_normalisation(data)
        return ImageData(self.whiten(data.x), data.y, data.classes, data.mean, data.std)

    def inverse(self, data: ImageData) -> ImageData:
        """Whitened ``data`` back in the normalised space (for image grids and saved summaries)."""
        self._check_normalisation(data)
        return ImageData(self.unwhiten(data.x), data.y, data.classes, data.mean, data.std)

    def apply_splits(self, splits: DatasetSplits) -> DatasetSplits:
        """Every split whitened; ``info["zca"]`` holds this whitening so later stages can undo it."""
        return DatasetSplits(
            splits.name,
            self.apply(splits.train),
            self.apply(splits.val),
            self.apply(splits.test),
            {**splits.info, INFO_KEY: self},
        )

    def for_display(self, data: ImageData) -> ImageData:
        """Whitened ``data`` as images to look at: :meth:`inverse`, or with ``layer_norm`` (which
        forgets each image's brightness and contrast) every image rescaled to unit RMS, the spread of
        a normalised image."""
        if not self.settings.layer_norm:
            return self.inverse(data)
        self._check_normalisation(data)
        features = self._colour(data.x).flatten(1)
        features = features - features.mean(dim=1, keepdim=True)
        shown = (features * math.sqrt(features.shape[1])).to(torch.float32)
        return ImageData(shown.view(-1, *self.shape), data.y, data.classes, data.mean, data.std)

    def _colour(self, z: torch.Tensor) -> torch.Tensor:
        """``z W^-1 + mu`` as float64 images ``[N, C, H, W]`` of the fit space."""
        self._check_shape(z)
        flat = z.detach().to(torch.float64).reshape(len(z), -1)
        out = flat @ self.colouring.to(z.device) + self.center.to(z.device)
        return out.view(-1, *self.shape)

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"this whitening is for images {list(self.shape)}, got shape {list(x.shape)}")

    def _check_normalisation(self, data: ImageData) -> None:
        if (tuple(data.mean), tuple(data.std)) != (self.mean, self.std):
            raise ValueError(
                f"this whitening was fitted on images normalised with mean {self.mean} and std {self.std},"
                f" got mean {data.mean} and std {data.std}; whiten images of the same dataset"
            )


def whiten_splits(splits: DatasetSplits, settings: ZCA) -> DatasetSplits:
    """``splits`` whitened by a ZCA fitted on their training split with ``settings``."""
    return settings.fit(splits.train).apply_splits(splits)


def whitening_of(splits: DatasetSplits) -> ZCAWhitening | None:
    """The whitening that :func:`whiten_splits` applied to ``splits`` (None when they are not whitened)."""
    return splits.info.get(INFO_KEY)


def displayable(data: ImageData, splits: DatasetSplits) -> ImageData:
    """``data`` (a summary or split of ``splits``) as images to show: un-whitened when ``splits`` are whitened."""
    whitening = whitening_of(splits)
    return data if whitening is None else whitening.for_display(data)


def _per_channel(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
