"""Small numeric helpers shared across methods: a scale-free ridge solve and seeded random draws."""

from __future__ import annotations

import torch

__all__ = ["SEED_HIGH", "draw_seed", "ridge_solve", "sample_batch"]

SEED_HIGH = 2**31 - 1  # exclusive bound of the seeds drawn by :func:`draw_seed`


def ridge_solve(k: torch.Tensor, y: torch.Tensor, reg: float) -> torch.Tensor:
    """``(K + lambda I)^{-1} y`` with ``lambda = reg * tr(K) / n``, in float64.

    Scaling ``lambda`` by the mean diagonal makes ``reg`` scale free. The
    ``n x n`` system is solved in float64 (it is small, and ``reg`` is
    typically 1e-6, where float32 loses the solution); the float64 result is
    returned. Differentiable in ``k`` and ``y``.
    """
    n = k.shape[0]
    k64 = k.to(torch.float64)
    ridge = reg * torch.diagonal(k64).sum() / n
    eye = torch.eye(n, dtype=torch.float64, device=k.device)
    return torch.linalg.solve(k64 + ridge * eye, y.to(torch.float64))


def sample_batch(n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (CPU int64) of ``min(batch, n)`` distinct items drawn uniformly from ``range(n)``."""
    return torch.randperm(n, generator=generator)[:batch]


def draw_seed(generator: torch.Generator) -> int:
    """A fresh integer seed in ``[0, SEED_HIGH)`` from a run's generator (network inits, augmentation, ...)."""
    return int(torch.randint(0, SEED_HIGH, (), generator=generator))
