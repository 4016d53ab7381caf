"""Machinery shared by the meta-learning distillers (DD, KIP, FRePo).

* Kernel ridge regression (KRR) with trace-scaled regularisation, the inner
  solver of KIP (Nguyen et al., ICLR 2021) and FRePo (Zhou et al., NeurIPS
  2022); its loss is eq. 5 of the survey by Sachdeva & McAuley (2023):

      L(S) = 1/2 || y_t - K_ts (K_ss + lambda I)^{-1} y_s ||^2

  with ``lambda = reg * tr(K_ss) / n_s`` so that ``reg`` is scale free (the
  scaling of KIP's and FRePo's released code).
* Regression targets: one-hot labels centred by ``1/K`` (KIP, section 3).
* :func:`finish_summary`: the CPU summary, with learned labels when there are some.
* Small helpers every meta-learning method needs (initial images, batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from proxynas.data.types import ImageData
from proxynas.distill.base import Summary, class_indices, make_summary

INITS = ("real", "noise")
SEED_HIGH = 2**31 - 1  # exclusive bound of the per-iteration seeds drawn from the run's generator


def regression_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Centred one-hot targets ``onehot(y) - 1/K`` (float32, KIP section 3)."""
    onehot = torch.nn.functional.one_hot(y, num_classes).to(torch.float32)
    return onehot - 1.0 / num_classes


def krr_predict(k_ts: torch.Tensor, k_ss: torch.Tensor, y_s: torch.Tensor, reg: float) -> torch.Tensor:
    """``K_ts (K_ss + lambda I)^{-1} y_s`` with ``lambda = reg * tr(K_ss) / n_s``.

    The ``n_s x n_s`` system is solved in float64 (it is small, and ``reg`` is
    typically 1e-6, where float32 loses the solution); the prediction is
    returned in ``y_s``'s dtype. Differentiable in all three tensors.
    """
    n = k_ss.shape[0]
    k_ss64 = k_ss.to(torch.float64)
    ridge = reg * torch.diagonal(k_ss64).sum() / n
    eye = torch.eye(n, dtype=torch.float64, device=k_ss.device)
    alpha = torch.linalg.solve(k_ss64 + ridge * eye, y_s.to(torch.float64))
    return (k_ts.to(torch.float64) @ alpha).to(y_s.dtype)


def krr_loss(
    k_ts: torch.Tensor, k_ss: torch.Tensor, y_s: torch.Tensor, y_t: torch.Tensor, reg: float
) -> torch.Tensor:
    """Survey eq. 5, ``1/2 ||y_t - K_ts (K_ss + lambda I)^{-1} y_s||^2``, averaged over targets.

    Dividing by the number of targets (not in eq. 5) makes the loss, and so
    the meaning of a learning rate, independent of the target batch size.
    """
    pred = krr_predict(k_ts, k_ss, y_s, reg)
    return 0.5 * ((y_t - pred) ** 2).sum(dim=1).mean()


def initial_images(
    train: ImageData, ipc: int, init: str, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Synthetic images at step 0, classes in order: random real images of each class, or N(0, 1) noise.

    Noise is standard normal because the images are normalised per channel.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    if init == "noise":
        c, h, w = train.shape
        return torch.randn(train.num_classes * ipc, c, h, w, generator=generator).to(device)
    picks = [idx[torch.randperm(len(idx), generator=generator)[:ipc]] for idx in class_indices(train)]
    return train.x[torch.cat(picks).to(train.x.device)].to(device, torch.float32)


def sample_batch(n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (CPU int64) of ``min(batch, n)`` distinct items drawn uniformly from ``range(n)``."""
    return torch.randperm(n, generator=generator)[:batch]


def draw_seed(generator: torch.Generator) -> int:
    """A fresh integer seed from the run's generator (network inits, ...)."""
    return int(torch.randint(0, SEED_HIGH, (), generator=generator))


def finish_summary(
    train: ImageData,
    syn: torch.Tensor,
    ipc: int,
    method: str,
    history: Sequence[float],
    labels: torch.Tensor | None = None,
) -> Summary:
    """The CPU summary of ``syn`` (classes in order), carrying ``labels`` as MSE targets when learned."""
    summary = make_summary(train, syn.detach().split(ipc), method, history)
    if labels is None:
        return summary
    soft = labels.detach().to("cpu", torch.float32).contiguous()
    return Summary(data=summary.data, method=method, history=summary.history, soft_labels=soft, label_loss="mse")


def check_positive_int(obj: object, *names: str) -> None:
    """Raise ValueError unless every named field of ``obj`` is an int > 0 (bools rejected)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be an integer > 0, got {value!r}")


def check_positive_float(obj: object, *names: str) -> None:
    """Raise ValueError unless every named field of ``obj`` is a number > 0 (NaN rejected)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
