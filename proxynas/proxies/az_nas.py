"""AZ-NAS: four complementary zero-cost proxies assembled by non-linear rank aggregation.

Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture
Search", CVPR 2024. An untrained network in training mode sees one minibatch;
with F_0 the input of its first block and F_l (l = 1..L) the output of block l
(for NB201: F_0 the stem's output, then every cell and residual reduction
block), four scores are read off one forward pass and L Jacobian-vector
products (Sec. 3.1):

* **expressivity** -- how isotropic each feature space is. The C-dimensional
  feature vectors of F_l at all batch x spatial positions have a covariance
  whose eigenvalues, normalised to sum to one (p_1..p_C), are a distribution
  over principal directions; its entropy ``E_l = -sum_c p_c log p_c`` is log C
  for isotropic features and 0 for features on a line. ``s_E = sum_l E_l``.
* **progressivity** -- whether every block adds expressivity:
  ``s_P = min_l (E_l - E_{l-1})``.
* **trainability** -- whether gradients pass through every block unchanged in
  scale. The spectral norm sigma_l of block l's Jacobian is estimated with a
  Rademacher probe v at F_l: ``g = J_l^T v`` (one backward pass), and
  ``sigma_l`` is the largest singular value of ``M_l = mean over positions of
  g v^T`` (C_in x C_out), an estimate of the per-position Jacobian (E[v v^T] =
  I). When the block changes resolution, g is first rearranged to the output
  resolution (pixel unshuffle: a stride-s block's s x s input pixels become
  channels). Then ``s_T = (1/L) sum_l (2 - sigma_l - 1/sigma_l)``, which is 0
  at sigma_l = 1 and negative otherwise.
* **complexity** -- FLOPs of the network (:func:`proxynas.proxies.flops.count_macs`).

None of them ranks well alone; the paper's score of an architecture a among a
population of N candidates is (Sec. 3.2, Eq. 12)

    s(a) = sum_{m in E, P, T, C}  log( rank_m(a) / N ),

where rank_m(a) is a's ascending rank under proxy m (1 = lowest score,
N = highest; ties get their average rank). Each term is at most 0, reached only
by the best candidate, and a candidate ranked low by any one proxy is pushed
down hard (the logarithm), so the candidates good under all four come first.
Because the score needs the whole population, :class:`AZNasProxy` is a
*combining* proxy: ``score`` returns the four components and ``combine`` does
the aggregation (``proxynas.evaluation.score_all`` calls it).

Details follow the authors' released code (cvlab-yonsei/AZ-NAS, NB201
experiments), read for the protocol, not copied:

* the network is re-initialised before scoring: conv and linear weights
  Kaiming-normal (fan-in, ReLU gain), biases 0, norm layers' affine 1 / 0
  (``init: kaiming_normal``; ``init: default`` keeps the space's own
  initialisation). The re-initialisation runs on the CPU, seeded by
  ``ctx.seed``, so the weights are the same on every device;
* the minibatch is standard-normal noise of the dataset's shape
  (``inputs: gaussian``, drawn on the CPU from ``ctx.seed``); ``inputs: data``
  uses the zero-cost batch of ``ctx.train_data`` instead;
* a block that passes the probe back exactly unchanged (an identity) gets
  trainability -inf: it adds depth but no trainable transformation;
* a non-finite component (NaN) is scored -inf.

Two choices are ours: features with zero variance (a disconnected NB201 cell
outputs zeros) have expressivity 0, the entropy of a point mass, where the
authors' code divides by zero; and the FLOPs are counted on the network being
scored, where the authors read them from the benchmark's C=16, N=5 network.

Networks: any network with ``forward_features`` (F_0..F_L, see
``proxynas.spaces.base.FeatureNetwork``), as every built-in space builds --
NB201: the stem's output, then each cell / reduction block; the DC ConvNet of
the 720-ConvNet space: the input images, then each conv-norm-act[-pool] group.
Any other network is refused with a one-line error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from proxynas.errors import ConfigError
from proxynas.metrics.aggregation import log_rank_aggregate
from proxynas.proxies.base import PROXIES, Proxy, ProxyContext
from proxynas.proxies.flops import count_macs
from proxynas.proxies.zero_cost_batch import ZeroCostBatch, build_network

#: The four component scores, in the paper's order.
COMPONENTS = ("expressivity", "progressivity", "trainability", "complexity")

#: keeps 1/sigma finite for a block whose Jacobian estimate is zero (authors' constant)
SIGMA_EPS = 1e-6

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


# -- the four scores ---------------------------------------------------------------


def isotropy_entropy(features: torch.Tensor) -> float:
    """Entropy of the normalised covariance eigenvalues of ``features`` ([B, C, ...], channels = dim 1).

    Every batch x spatial position is one C-dimensional sample. log C for
    isotropic features, 0 for rank-one ones and (by our convention) for
    features without variance.
    """
    c = features.shape[1]
    x = features.detach().movedim(1, -1).reshape(-1, c).double()
    x = x - x.mean(dim=0, keepdim=True)
    cov = x.T @ x / x.shape[0]
    eig = torch.linalg.eigvalsh(cov).clamp_min(0.0)  # clip round-off below 0
    total = eig.sum()
    if not torch.isfinite(total):
        return float("nan")
    if total <= 0:
        return 0.0
    p = eig / total
    return float(-torch.xlogy(p, p).sum())


def progressivity(expressivities: Sequence[float]) -> float:
    """The smallest increase of expressivity from one feature map to the next."""
    e = np.asarray(expressivities, dtype=np.float64)
    if e.size < 2:
        raise ValueError(f"progressivity needs at least 2 feature maps, got {e.size}")
    return float(np.min(e[1:] - e[:-1]))


def rademacher_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A +-1 tensor of ``t``'s shape, drawn on the CPU (device-independent), on ``t``'s device."""
    signs = torch.randint(0, 2, tuple(t.shape), generator=generator).mul_(2).sub_(1)
    return signs.to(device=t.device, dtype=t.dtype)


def _to_output_resolution(g_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """``g_in`` ([B, C, H, W]) rearranged to ``g_out``'s spatial size by pixel unshuffle."""
    if g_in.dim() != 4 or g_in.shape[2:] == g_out.shape[2:]:
        return g_in
    (h_in, w_in), (h_out, w_out) = g_in.shape[2:], g_out.shape[2:]
    stride = -(-h_in // h_out)  # ceil: a ceil-mode reduction of an odd size
    if h_out > h_in or -(-w_in // w_out) != stride:
        raise ValueError(f"cannot align a block's input {h_in}x{w_in} with its output {h_out}x{w_out}")
    # zero-pad to stride * output size, then move each stride x stride patch into channels
    g_in = F.pad(g_in, (0, stride * w_out - w_in, 0, stride * h_out - h_in))
    return F.pixel_unshuffle(g_in, stride)


def probe_spectral_norm(g_in: torch.Tensor, g_out: torch.Tensor) -> float:
    """Largest singular value of ``mean over positions of g_in g_out^T`` (channels = dim 1).

    With ``g_out`` a Rademacher probe and ``g_in = J^T g_out`` this estimates
    the spectral norm of the block's per-position Jacobian.
    """
    g_in = _to_output_resolution(g_in, g_out)
    if g_in.shape[0] != g_out.shape[0] or g_in.shape[2:] != g_out.shape[2:]:
        raise ValueError(f"probe shapes {tuple(g_in.shape)} and {tuple(g_out.shape)} do not align")
    a = g_in.detach().movedim(1, -1).reshape(-1, g_in.shape[1]).double()
    b = g_out.detach().movedim(1, -1).reshape(-1, g_out.shape[1]).double()
    m = a.T @ b / a.shape[0]
    if not torch.isfinite(m).all():
        return float("nan")
    return float(torch.linalg.svdvals(m).max())


def block_trainability(f_in: torch.Tensor, f_out: torch.Tensor, generator: torch.Generator) -> tuple[float, float]:
    """``(sigma, score)`` of the block mapping ``f_in`` to ``f_out`` (both in one autograd graph).

    ``score = 2 - sigma - 1/sigma`` (0 at sigma = 1), or -inf when the block
    returns the probe unchanged (an identity).
    """
    probe = rademacher_like(f_out, generator)
    (g_in,) = torch.autograd.grad(f_out, f_in, grad_outputs=probe, retain_graph=True, allow_unused=True)
    if g_in is None:  # the output does not depend on the input at all
        g_in = torch.zeros_like(f_in)
    if g_in.shape == probe.shape and torch.equal(g_in, probe):
        return 1.0, float("-inf")
    sigma = probe_spectral_norm(g_in, probe)
    return sigma, 2.0 - sigma - 1.0 / (sigma + SIGMA_EPS)


# -- the network's blocks --------------------------------------------------------------


def block_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """F_0..F_L of ``net`` on ``x`` (one forward pass, autograd graph kept).

    The network says what its blocks are: ``net.forward_features(x)`` returns
    F_0 (the first block's input) and every block's output, the feature API of
    the search spaces' networks (``proxynas.spaces.base.FeatureNetwork``). ``x``
    becomes a leaf that requires grad, so F_0 may be the input itself.
    """
    forward_features = getattr(net, "forward_features", None)
    if not callable(forward_features):
        raise ConfigError(
            f"az_nas needs a network made of blocks and cannot find them in {type(net).__name__}"
            " (it has no forward_features); use another proxy for this space"
        )
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        feats = list(forward_features(x))
    if len(feats) < 2:
        raise ConfigError(f"az_nas needs at least 2 feature maps, {type(net).__name__} gave {len(feats)}")
    return feats


# -- initialisation ------------------------------------------------------------------


def kaiming_normal_init(net: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-in, ReLU) conv/linear weights, zero biases, unit/zero norm affines; in place."""
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return net


def _finite_or_neg_inf(value: float) -> float:
    return float("-inf") if math.isnan(value) else float(value)


@PROXIES.register("az_nas")
@dataclass(frozen=True)
class AZNasProxy(ZeroCostBatch, Proxy):
    """Expressivity, progressivity, trainability and FLOPs, combined by sum of log(rank / N)."""

    unit = "sum log(rank/N)"
    parallel = True  # L backward passes per arch: worth a process per core on a CPU
    combines = True

    #: ``gaussian``: standard-normal images (the authors' protocol); ``data``: the zero-cost batch
    inputs: Literal["gaussian", "data"] = "gaussian"
    #: ``kaiming_normal``: the authors' re-initialisation; ``default``: the space's own
    init: Literal["kaiming_normal", "default"] = "kaiming_normal"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inputs not in ("gaussian", "data"):
            raise ValueError(f"inputs must be 'gaussian' or 'data', got {self.inputs!r}")
        if self.init not in ("kaiming_normal", "default"):
            raise ValueError(f"init must be 'kaiming_normal' or 'default', got {self.init!r}")

    def network(self, arch: str, ctx: ProxyContext) -> nn.Module:
        """The network scored for ``arch``: built (and re-initialised) on the CPU, then on ``ctx.device``."""
        net = build_network(arch, dataclasses.replace(ctx, device=torch.device("cpu")))
        if self.init == "kaiming_normal":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                kaiming_normal_init(net)
        return net.to(ctx.device).train()

    def minibatch(self, ctx: ProxyContext) -> torch.Tensor:
        """The images the network sees (see ``inputs``)."""
        if self.inputs == "data":
            return self.batch(ctx)[0]
        generator = torch.Generator().manual_seed(int(ctx.seed))
        return torch.randn(self.batch_size, *ctx.dataset.shape, generator=generator).to(ctx.device)

    def score(self, arch: str, ctx: ProxyContext) -> dict[str, float]:
        net = self.network(arch, ctx)
        x = self.minibatch(ctx)
        net.zero_grad(set_to_none=True)
        feats = block_features(net, x)
        expressivities = [isotropy_entropy(f) for f in feats]
        generator = torch.Generator().manual_seed(int(ctx.seed))
        with torch.enable_grad():
            block_scores = [block_trainability(feats[i - 1], feats[i], generator)[1] for i in range(1, len(feats))]
        del feats
        return {
            "expressivity": _finite_or_neg_inf(float(np.sum(expressivities))),
            "progressivity": _finite_or_neg_inf(progressivity(expressivities)),
            "trainability": _finite_or_neg_inf(float(np.mean(block_scores))),
            "complexity": float(count_macs(net, ctx.dataset.shape, device=ctx.device)),
        }

    def combine(self, raw: Sequence[Any]) -> list[float]:
        """AZ-NAS scores of the population ``raw`` (``score`` dicts, one per arch): Eq. 12."""
        for i, r in enumerate(raw):
            missing = [c for c in COMPONENTS if not isinstance(r, Mapping) or c not in r]
            if missing:
                raise ValueError(f"az_nas: score {i} lacks component(s) {', '.join(missing)}")
        return log_rank_aggregate({c: [float(r[c]) for r in raw] for c in COMPONENTS})
