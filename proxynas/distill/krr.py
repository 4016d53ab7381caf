"""Kernel ridge regression, the inner solver of the meta-model-matching distillers (KIP, FRePo).

* Kernel ridge regression (KRR) with trace-scaled regularisation, the inner
  solver of KIP (Nguyen et al., ICLR 2021) and FRePo (Zhou et al., NeurIPS
  2022); its loss is eq. 5 of the survey by Sachdeva & McAuley (2023):

      L(S) = 1/2 || y_t - K_ts (K_ss + lambda I)^{-1} y_s ||^2

  with ``lambda = reg * tr(K_ss) / n_s`` so that ``reg`` is scale free (the
  scaling of KIP's and FRePo's released code).
* Regression targets: one-hot labels centred by ``1/K`` (KIP, section 3).
The scale-free ridge solve and the seeded random draws (``draw_seed``,
``sample_batch``) are generic and live in :mod:`proxynas.numerics`; the
synthetic images at step 0 and the finished summary are every synthetic
method's and live in :mod:`proxynas.distill.base`.
"""

from __future__ import annotations

import torch

from proxynas.numerics import ridge_solve

def regression_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Centred one-hot targets ``onehot(y) - 1/K`` (float32, KIP section 3)."""
    onehot = torch.nn.functional.one_hot(y, num_classes).to(torch.float32)
    return onehot - 1.0 / num_classes


def krr_predict(k_ts: torch.Tensor, k_ss: torch.Tensor, y_s: torch.Tensor, reg: float) -> torch.Tensor:
    """``K_ts (K_ss + lambda I)^{-1} y_s`` with ``lambda = reg * tr(K_ss) / n_s``.

    The system is solved in float64 (:func:`~proxynas.numerics.ridge_solve`);
    the prediction is returned in ``y_s``'s dtype. Differentiable in all three tensors.
    """
    alpha = ridge_solve(k_ss, y_s, reg)
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
