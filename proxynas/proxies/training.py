"""The data proxy: train the architecture on some data, score it on held-out images and on its learning curve.

With ``train_data`` = a distilled summary this is the proxy whose rank
preservation proxynas measures (the DC-Bench NAS protocol, Cui et al., NeurIPS
2022 Datasets & Benchmarks, Sec. 3.4), scored on the *validation* split:
choosing architectures by their test accuracy would be selection on the test
set. With the full training split and ``eval_split: test`` it is the reference
(NAS-Bench-201's protocol, Dong & Yang, ICLR 2020, Sec. 2.3).

One training yields several scores (``scores``), each a report row:

* ``val_acc``: accuracy (%) on the evaluation images after the last epoch;
* ``val_loss``: minus their cross-entropy after the last epoch;
* ``sotl_<E>``: minus the sum of the mean training losses of the last E
  epochs, SoTL-E (Ru, Lyle, Schut, Fil, van der Wilk & Gal, "Speedy
  Performance Estimation for Neural Architecture Search", NeurIPS 2021,
  Sec. 3: a lower sum of training losses predicts a better network);
* ``val_acc@<P>%``: the validation accuracy after P% of the budget's
  epochs (an early-stopped version of ``val_acc``, read off the curve).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import torch

from proxynas.data.types import ImageData
from proxynas.errors import ConfigError
from proxynas.fields import KEYED_WHEN_SET, checked
from proxynas.progress import null_progress
from proxynas.proxies import arch_batch as auto_batch
from proxynas.proxies.base import PROXIES, Proxy, ProxyContext, Scored
from proxynas.models.fused import NotFusable
from proxynas.training import EpochRecord, TrainSettings, fit, fit_fused, fit_side_by_side

#: what ``scores`` may name
SCORE_FORMS = "val_acc, val_loss, sotl_<E> (E a positive integer), val_acc@<P>% (P in 1..100)"
_SOTL = re.compile(r"sotl_([1-9][0-9]*)")
_EARLY = re.compile(r"val_acc@([1-9][0-9]*)%")


def parse_score(name: str) -> tuple[str, int | None]:
    """``("val_acc" | "val_loss" | "sotl" | "early", E or P or None)`` of a score name (ValueError if unknown)."""
    if name in ("val_acc", "val_loss"):
        return name, None
    match = _SOTL.fullmatch(name)
    if match:
        return "sotl", int(match.group(1))
    match = _EARLY.fullmatch(name)
    if match and int(match.group(1)) <= 100:
        return "early", int(match.group(1))
    raise ValueError(f"unknown score {name!r} in scores; choose from: {SCORE_FORMS}")


def _check_scores(names: Sequence[str]) -> None:
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"scores must be a list of score names ({SCORE_FORMS}), got {names!r}")
    if not names:
        raise ValueError(f"scores must name at least one score ({SCORE_FORMS})")
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"scores must be a list of score names ({SCORE_FORMS}), got {name!r}")
        parse_score(name)
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ValueError(f"scores lists {dupes[0]!r} twice; list each score once")


def _check_arch_batch(value: Any) -> None:
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"arch_batch must be an integer >= 1 or auto, got {value!r}")


def stratified_subset(data: ImageData, size: int, seed: int) -> ImageData:
    """``size`` images of ``data`` drawn per class in proportion to the class sizes (at least one each).

    Allocation is largest-remainder over the images beyond one per class;
    within a class the images are a uniform draw of a CPU generator seeded
    with ``seed``; the subset keeps the split's order. ``size`` at or above
    ``len(data)`` gives the whole split; below the number of classes present
    it is a ValueError.
    """
    if size >= len(data):
        return data
    classes = torch.unique(data.y)
    if size < len(classes):
        raise ValueError(f"a class-stratified subset of {size} images cannot hold the {len(classes)} classes")
    members = [torch.nonzero(data.y == k).flatten() for k in classes.tolist()]
    extra = torch.tensor([len(m) - 1 for m in members], dtype=torch.float64)
    share = extra * (size - len(members)) / extra.sum()
    counts = share.floor().long()
    left = size - len(members) - int(counts.sum())
    if left:
        # largest fractional part first; ties to the lower class index (a stable sort)
        order = torch.argsort(share - counts, descending=True, stable=True)
        counts[order[:left]] += 1
    gen = torch.Generator().manual_seed(int(seed))
    picked = [m[torch.randperm(len(m), generator=gen)[: 1 + int(c)]] for m, c in zip(members, counts)]
    return data.subset(torch.cat(picked).sort().values)


@PROXIES.register("train")
@dataclass(frozen=True)
class TrainProxy(TrainSettings, Proxy):
    """Accuracy (%) on held-out images after training on ``ctx.train_data``, and learning-curve scores.

    Settings besides the SGD recipe (:class:`~proxynas.training.TrainSettings`):

    * ``eval_split``: ``val`` (default; a proxy never reads the test split)
      or ``test`` (the reference's NAS-Bench-201 protocol);
    * ``eval_size``: score on a seeded, class-stratified subset of that many
      images of the split (drawn from the proxy seed, the same for every
      arch; at least one per class); ``None`` = the whole split;
    * ``scores``: the named values one training reports (module doc), the
      first being the row's value: ``val_acc`` (default), ``val_loss``,
      ``sotl_<E>`` (SoTL-E, Ru et al., NeurIPS 2021), ``val_acc@<P>%``
      (needs ``curve_every`` to divide that epoch);
    * ``arch_batch``: train that many architectures at once as one fused
      network (:meth:`SearchSpace.fuse <proxynas.spaces.base.SearchSpace.fuse>`,
      :func:`~proxynas.training.fit_fused`): each gets the initial weights,
      batches and augmentations it gets alone, so its scores equal
      one-by-one training up to float rounding (the tests bound the
      difference); 1 (default) trains them one by one. It pays where a
      network leaves the device idle (a GPU and a small summary); a value
      too large for the device's memory fails with a one-line error.
      ``auto`` measures how many fit the device
      (:mod:`proxynas.proxies.arch_batch`; 1 on a CPU, where fusion does not
      pay). The groups then depend on the device's free memory, so results
      may differ from another device's by float rounding; give a number
      where that matters (a distributed run, ``run.storage``, requires one).
    * ``batching``: how ``arch_batch`` networks train at once. ``fused``
      (default) stacks them into one network (HFTA-style grouped
      convolutions; spaces that can fuse, NB201); ``side_by_side`` keeps
      them whole and runs network k on CUDA stream k, so their kernels may
      overlap on the card -- with ``cuda_graphs`` one graph holds the
      networks as parallel branches (:mod:`proxynas.models.parallel`) --
      any space, one after another on a CPU, where it trains each network
      as one-by-one training does (its layout too).
    """

    #: 2: scores on ``eval_split`` (val by default), records learning curves, several named scores;
    #: 3: ``augment: flip`` draws its coins from the step's seed, not the global generator;
    #: 4: DSA's cutout centres and rotation direction are the released DSA's;
    #: 5: one-by-one training runs channels-last for spaces that declare it pays (NB201)
    version: ClassVar[str] = "5"
    unit = "accuracy % on eval_split"
    parallel = True
    records_curves = True

    eval_split: Literal["val", "test"] = "val"
    eval_size: int | None = checked(None, ge=1)
    scores: tuple[str, ...] = checked(("val_acc",), check=_check_scores)
    arch_batch: int | str = checked(1, check=_check_arch_batch, keyed_when_set=True)
    batching: str = checked("fused", choices=("fused", "side_by_side"), keyed_when_set=True)
    # set on the copy fitted_to() returns, for the out-of-memory message; never in a cache key
    _chosen_automatically: bool = field(
        default=False, init=False, repr=False, compare=False, metadata={KEYED_WHEN_SET: True}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps is None:  # the budget's epochs are known now; with steps they depend on the data
            self._check_budget(self.epochs)

    def _check_budget(self, epochs: int) -> None:
        """ValueError unless every score can be read off a training of ``epochs`` epochs."""
        for name in self.scores:
            kind, n = parse_score(name)
            if kind == "sotl" and n > epochs:
                raise ValueError(
                    f"scores: {name} sums the last {n} epochs but training runs {epochs}; "
                    "lower E or raise the budget (epochs/steps)"
                )
            if kind == "early":
                if n * epochs % 100:
                    raise ValueError(
                        f"scores: {name} needs a whole epoch at {n}% of {epochs} epochs; "
                        "choose P so that P x epochs / 100 is an integer"
                    )
                at = n * epochs // 100
                if at != epochs and (self.curve_every == 0 or at % self.curve_every):
                    measured = (
                        "only after the last epoch" if self.curve_every == 0 else f"every {self.curve_every} epochs"
                    )
                    raise ValueError(
                        f"scores: {name} reads the validation curve at epoch {at} but curve_every="
                        f"{self.curve_every} measures it {measured}; set curve_every to a divisor of {at}"
                    )

    def value_names(self) -> tuple[str, ...]:
        return tuple(self.scores)

    def eval_data(self, ctx: ProxyContext) -> ImageData:
        """The images scores are measured on: ``eval_split`` of ``ctx.dataset``, subset to ``eval_size``."""
        split = ctx.dataset.val if self.eval_split == "val" else ctx.dataset.test
        if self.eval_size is None:
            return split
        try:
            return stratified_subset(split, self.eval_size, ctx.seed)
        except ValueError as exc:
            raise ConfigError(f"{ctx.setting_prefix}.eval_size={self.eval_size}: {exc}; raise it") from None

    def _build(self, arch: str, ctx: ProxyContext) -> torch.nn.Module:
        torch.manual_seed(ctx.seed)  # every arch starts from the weights this seed gives it alone
        shape = ctx.dataset.shape
        return ctx.space.build_for_training(
            arch, in_channels=shape[0], num_classes=ctx.dataset.num_classes, image_size=shape[1]
        )

    def _check_steps_budget(self, ctx: ProxyContext) -> None:
        if self.steps is not None:
            try:
                self._check_budget(self.budget_epochs(len(ctx.train_data)))
            except ValueError as exc:
                raise ConfigError(f"{ctx.setting_prefix}.{exc}") from None

    def _fit_options(self, ctx: ProxyContext) -> dict[str, Any]:
        """What :func:`fit` and :func:`fit_fused` are told about the context, the same for both."""
        return {
            "device": ctx.device,
            "seed": ctx.seed,
            "setting_prefix": ctx.setting_prefix,
            "progress": ctx.progress,
            "soft_labels": ctx.soft_labels,
            "label_loss": ctx.label_loss,
            "learned_lr": ctx.learned_lr,
            "learned_schedule": ctx.learned_schedule,
            "eval_data": self.eval_data(ctx),
            "teacher": ctx.teacher,
            "temperature": ctx.temperature,
        }

    def batches_in(self, space) -> bool:
        """Side by side, any space's networks train at once; fused, only a space's that fuses."""
        return self.batching == "side_by_side" or space.fuses

    def archs_per_scoring(self) -> int:
        """``arch_batch``; 1 while it is ``auto`` and not yet :meth:`fitted_to` a device."""
        return 1 if self.arch_batch == "auto" else self.arch_batch

    def fitted_to(self, archs: Sequence[str], ctx: ProxyContext) -> "TrainProxy":
        """For ``arch_batch: auto``, a copy training as many of ``archs`` at once as fit ``ctx.device``."""
        if self.arch_batch != "auto":
            return self
        count = 1
        if auto_batch.measures_memory(ctx.device) and self.batches_in(ctx.space) and len(archs) > 1:
            count = self._fitting_arch_batch(archs, ctx)
        fitted = dataclasses.replace(self, arch_batch=count)
        object.__setattr__(fitted, "_chosen_automatically", True)
        ctx.progress(0, len(archs), arch_batch=count)
        return fitted

    def _fitting_arch_batch(self, archs: Sequence[str], ctx: ProxyContext) -> int:
        """How many of ``archs`` fit ``ctx.device`` fused, measured on copies of the heaviest one."""
        shape = ctx.dataset.shape
        heaviest = auto_batch.heaviest(
            archs,
            lambda arch: ctx.space.num_params(
                arch, in_channels=shape[0], num_classes=ctx.dataset.num_classes, image_size=shape[1]
            ),
        )
        probe_ctx = dataclasses.replace(ctx, progress=null_progress)

        def peak(count: int) -> int:
            probe = dataclasses.replace(
                self, arch_batch=count, steps=auto_batch.PROBE_STEPS, scores=("val_acc",), curve_every=0
            )
            return auto_batch.peak_bytes(
                lambda: probe.score_batch([heaviest] * count, probe_ctx), ctx.device, reserved=self.cuda_graphs
            )

        budget = int(auto_batch.MEMORY_FRACTION * auto_batch.free_bytes(ctx.device) * ctx.memory_share)
        return auto_batch.fitting_count(peak, budget, len(archs))

    def score_batch(self, archs: Sequence[str], ctx: ProxyContext) -> list[Scored]:
        """Train ``archs`` at once (``arch_batch``, fused or side by side: ``batching``); their scores, in order."""
        if len(archs) == 1:
            return [self.score_values(archs[0], ctx)]
        self._check_steps_budget(ctx)
        networks = [self._build(arch, ctx) for arch in archs]
        prefix = ctx.setting_prefix
        options = self._fit_options(ctx)
        if self.batching == "side_by_side":
            def train() -> list[tuple[EpochRecord, ...]]:
                return fit_side_by_side(networks, ctx.train_data, self, labels=list(archs),
                                        channels_last=ctx.space.trains_channels_last, **options)
        else:
            try:
                fused = ctx.space.fuse(networks)
            except NotFusable as exc:
                raise ConfigError(
                    f"{prefix}.arch_batch={self.arch_batch}: {exc}; set {prefix}.arch_batch: 1"
                    f" or {prefix}.batching: side_by_side"
                ) from None

            def train() -> list[tuple[EpochRecord, ...]]:
                return fit_fused(fused, ctx.train_data, self, labels=list(archs), **options)
        try:
            curves = train()
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            if self._chosen_automatically:
                raise ConfigError(
                    f"{prefix}.arch_batch=auto chose {self.arch_batch}, but {len(archs)} of these networks trained"
                    f" at once do not fit in the memory of {ctx.device}; set {prefix}.arch_batch below that"
                ) from None
            raise ConfigError(
                f"{prefix}.arch_batch={self.arch_batch}: {len(archs)} networks trained at once do not fit"
                f" in the memory of {ctx.device}; lower {prefix}.arch_batch"
            ) from None
        return [
            Scored({name: _read(name, curve) for name in self.scores}, tuple(r.as_dict() for r in curve))
            for curve in curves
        ]

    def score_values(self, arch: str, ctx: ProxyContext) -> Scored:
        """Train once; every name of ``scores`` from the final evaluation and the learning curve."""
        model = self._build(arch, ctx)
        self._check_steps_budget(ctx)
        fitted = fit(model, ctx.train_data, self, label=arch, channels_last=ctx.space.trains_channels_last,
                     **self._fit_options(ctx))
        values = {name: _read(name, fitted.curve) for name in self.scores}
        return Scored(values, tuple(r.as_dict() for r in fitted.curve))

    def score(self, arch: str, ctx: ProxyContext) -> float:
        return self.score_values(arch, ctx).values[self.scores[0]]


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised while handling, is an allocation failure.

    CUDA's OutOfMemoryError or the CPU allocator's; the chain is walked
    because an allocation that fails inside a CUDA-graph capture can surface
    as the capture's error, with the out-of-memory as its context.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, torch.OutOfMemoryError) or "can't allocate memory" in str(cause):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _read(name: str, curve: Sequence[EpochRecord]) -> float:
    """Score ``name`` from a learning curve whose last record holds the final evaluation."""
    kind, n = parse_score(name)
    final = curve[-1]
    if kind == "val_acc":
        return float(final.val_acc)
    if kind == "val_loss":
        return -float(final.val_loss)
    if kind == "sotl":
        return -float(sum(r.train_loss for r in curve[-n:]))
    at = n * len(curve) // 100
    return float(curve[at - 1].val_acc)
