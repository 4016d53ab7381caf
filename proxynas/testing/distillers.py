"""The contract every distiller meets, as a pytest suite a method's test subclasses.

A method is tested by one subclass naming one *fast* instance (a CPU run on the
tiny data below should take well under a second)::

    from proxynas.testing.distillers import DistillerContract

    class TestDMContract(DistillerContract):
        distiller = DM(iterations=12, width=16, depth=2)

The class is not named ``Test...`` so pytest collects only its subclasses. The
distillation runs once per subclass (a class-scoped fixture: seed 0 twice and
seed 1 once) and every test reads those runs. A :class:`PreparedDistiller`
(MTT, TESLA) is run whole for seed 0 and as ``prepare`` + ``distill_prepared``
for the repeat, so the two must agree exactly.

What is checked: ``ipc`` images per class in class order, on the CPU, finite,
float32, with the data's classes and normalisation stats; valid soft labels;
the input and torch's global RNG left alone; the same summary for one seed and
another for another seed (unless the method is not ``seeded``); for iterative
methods a history of at least 10 values whose last 5 average below the first
5; progress reported up to done == total; for iterative methods, a
distillation interrupted after a checkpoint and resumed from it ends
bit-identical to an uninterrupted one; a preparation that survives the
stage cache; one-line errors for a missing or too small class and a bad
``ipc``; the registered name and config round trip; a docstring citing the
paper.

Optional class attributes: ``ipc`` (default 2), ``train`` (an
:class:`ImageData`; default :func:`tiny_images`, three separable classes of
1x8x8 images) and ``learns_step_size`` (default False: the summary carries no
``learned_lr``; True: it carries a finite positive step size learned away from
the method's initial ``lr_teacher``, the same for a repeated run) and
``interrupt_at`` (default ``None``: half the iterations; the iteration after
which the checkpointed run is killed).

A :class:`PreparedDistiller` is tested with :class:`PreparedDistillerContract`,
which adds the check that its preparation survives the stage cache.

A distiller that can match through the cells of the search space being
ranked (``networks: space``) is also tested with
:class:`SpaceAwareDistillerContract`, naming an instance with that setting.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import pytest
import torch

from proxynas.data.types import ImageData
from proxynas.distill.base import DISTILLERS, LABEL_LOSSES, Distiller, PreparedDistiller, Summary
from proxynas.distill.checkpoint import STATE, Checkpoint
from proxynas.engine.journal import Journal
from proxynas.errors import ConfigError, DataError
from proxynas.spaces import NB201Space, SearchSpace
from proxynas.testing.plugins import assert_cites_a_paper, assert_registered

__all__ = [
    "DistillerContract",
    "PreparedDistillerContract",
    "Runs",
    "SpaceAwareDistillerContract",
    "assert_resumes_bit_identically",
    "recording_space",
    "tiny_images",
]

CPU = torch.device("cpu")

def tiny_images(
    classes: Sequence[str] = ("ant", "bee", "cat"), per_class: Sequence[int] = (20, 20, 20), seed: int = 0
) -> ImageData:
    """Separable 1x8x8 classes: a fixed random pattern per class plus small pixel noise.

    The classes are interleaved (as in a real split) and the normalisation
    stats are made up (``(0.5,)``, ``(0.25,)``) so a summary that drops or
    recomputes them is caught.
    """
    if len(per_class) != len(classes):
        raise ValueError(f"per_class has {len(per_class)} counts for {len(classes)} classes")
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(len(classes), 1, 8, 8, generator=g)
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(per_class)]).long()
    x = centres[y] + 0.5 * torch.randn(len(y), 1, 8, 8, generator=g)
    perm = torch.randperm(len(y), generator=g)
    return ImageData(x[perm], y[perm], tuple(classes), (0.5,), (0.25,))


@dataclass
class Runs:
    """What the class-scoped fixture computed once for one distiller."""

    first: Summary  # seed 0, reporting progress
    again: Summary  # seed 0 again (prepare + distill_prepared for a PreparedDistiller)
    other: Summary  # seed 1
    progress: list[tuple[int, int]] = field(default_factory=list)
    input_unchanged: bool = True
    rng_untouched: bool = True  # the global torch RNG was left as it was
    prepared: Any = None  # prepare()'s output for seed 0 (PreparedDistiller only)


class DistillerContract:
    """Inherited tests for one distiller instance; subclasses set :attr:`distiller`."""

    #: the fast instance under test (required)
    distiller: ClassVar[Distiller]
    #: images per class to distill
    ipc: ClassVar[int] = 2
    #: the training images; ``None`` means :func:`tiny_images`
    train: ClassVar[ImageData | None] = None
    #: the method learns a step size with its images (MTT/TESLA's alpha, ``Summary.learned_lr``)
    learns_step_size: ClassVar[bool] = False
    #: the iteration after which the checkpointed run is interrupted (None: half of them)
    interrupt_at: ClassVar[int | None] = None

    @classmethod
    def plugin_type(cls) -> type:
        """The registered class this subclass tests."""
        return type(cls.distiller)

    # -- fixtures ---------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def method(cls) -> Distiller:
        method = getattr(cls, "distiller", None)
        assert isinstance(method, Distiller), f"{cls.__name__} must set `distiller = <a Distiller instance>`"
        return method

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> ImageData:
        return cls.train if cls.train is not None else tiny_images()

    @pytest.fixture(scope="class")
    @classmethod
    def runs(cls, method: Distiller, data: ImageData) -> Runs:
        """The distillations every other test reads, computed once per subclass."""
        x, y = data.x.clone(), data.y.clone()
        calls: list[tuple[int, int]] = []
        rng = torch.random.get_rng_state()
        first = method.distill(
            data, cls.ipc, seed=0, device=CPU, progress=lambda done, total, **info: calls.append((done, total))
        )
        rng_untouched = torch.equal(torch.random.get_rng_state(), rng)
        unchanged = torch.equal(data.x, x) and torch.equal(data.y, y)
        prepared = None
        if isinstance(method, PreparedDistiller):
            prepared = method.prepare(data, seed=0, device=CPU)
            again = method.distill_prepared(data, cls.ipc, prepared, seed=0, device=CPU)
        else:
            again = method.distill(data, cls.ipc, seed=0, device=CPU)
        other = method.distill(data, cls.ipc, seed=1, device=CPU)
        return Runs(first, again, other, calls, unchanged, rng_untouched, prepared)

    # -- the summary ------------------------------------------------------------------

    def test_summary_has_ipc_images_per_class_in_class_order(self, method, data, runs):
        out = runs.first.data
        c, h, w = data.shape
        per_class = method.images_per_class(self.ipc)
        assert tuple(out.x.shape) == (data.num_classes * per_class, c, h, w)
        assert out.x.dtype == torch.float32 and out.y.dtype == torch.int64
        assert torch.equal(out.y, torch.arange(data.num_classes).repeat_interleave(per_class))
        assert out.classes == data.classes
        assert (out.mean, out.std) == (data.mean, data.std), "the summary must keep the data's normalisation"

    def test_storage_counts_what_the_summary_stores(self, method, data, runs):
        summary = runs.first
        assert isinstance(summary.storage, int) and summary.storage > 0
        if summary.stored_numbers is None:
            labels = 0 if summary.soft_labels is None else summary.soft_labels.numel()
            steps = 0 if summary.learned_schedule is None else len(summary.learned_schedule.step_sizes)
            assert summary.storage == summary.data.x.numel() + labels + steps
        if method.images_per_class(self.ipc) != self.ipc:
            assert summary.stored_numbers is not None, "a factorised summary must report what it stores"

    def test_paper_presets_build_and_the_protocol_is_cited(self, method):
        cls = type(method)
        for preset, settings in cls.presets.items():
            assert re.fullmatch(r"[a-z0-9_]+-ipc[0-9]+", preset), f"preset {preset!r} is not '<dataset>-ipc<N>'"
            built = cls.from_preset(preset)
            for key, value in settings.items():
                assert getattr(built, key) == value, f"preset {preset!r} did not set {key}"
            assert DISTILLERS.get(cls.name) is cls
        with pytest.raises(ConfigError, match="no preset"):
            cls.from_preset("no-such-ipc0")
        assert cls.paper_protocol.source.strip(), "paper_protocol.source must say where its values come from"
        assert method.evaluation_protocol().source.strip()
        unknown = set(cls.preset_protocols) - set(cls.presets)
        assert not unknown, f"preset_protocols names presets that do not exist: {sorted(unknown)}"
        for preset in cls.presets:
            assert method.evaluation_protocol(preset).source.strip()

    def test_summary_is_named_after_the_method(self, method, runs):
        assert runs.first.method == type(method).name

    def test_summary_is_on_the_cpu_finite_and_detached(self, runs):
        out = runs.first.data
        assert out.x.device.type == "cpu" and out.y.device.type == "cpu"
        assert torch.isfinite(out.x).all()
        assert not out.x.requires_grad

    def test_a_learned_step_size_travels_with_the_summary_only_when_learned(self, method, runs):
        lr = runs.first.learned_lr
        if not self.learns_step_size:
            assert lr is None, "set learns_step_size = True for a method that learns one"
            return
        assert isinstance(lr, float) and math.isfinite(lr) and lr > 0
        assert lr != method.lr_teacher  # learned, not the initial alpha
        assert runs.again.learned_lr == lr  # a repeat (prepare + distill_prepared) agrees

    def test_soft_labels_are_valid(self, runs):
        summary = runs.first
        assert summary.label_loss in LABEL_LOSSES
        labels = summary.soft_labels
        if labels is None:
            return
        assert tuple(labels.shape) == (len(summary.data), summary.data.num_classes)
        assert labels.dtype == torch.float32 and labels.device.type == "cpu"
        assert torch.isfinite(labels).all() and not labels.requires_grad

    def test_input_is_not_modified(self, runs):
        assert runs.input_unchanged, "distill() changed the training images or labels it was given"

    def test_global_rng_is_left_alone(self, runs):
        assert runs.rng_untouched, "distill() must draw from its own generators, not torch's global RNG"

    # -- seeds ------------------------------------------------------------------------

    def test_same_seed_gives_the_same_summary(self, method, runs):
        a, b = runs.first, runs.again
        assert torch.equal(a.data.x, b.data.x)
        assert a.history == b.history
        assert (a.soft_labels is None) == (b.soft_labels is None)
        if a.soft_labels is not None:
            assert torch.equal(a.soft_labels, b.soft_labels)

    def test_another_seed_gives_another_summary(self, method, runs):
        if not method.seeded:
            assert torch.equal(runs.first.data.x, runs.other.data.x), "an unseeded method must ignore the seed"
            return
        assert not torch.equal(runs.first.data.x, runs.other.data.x)

    # -- the objective and progress ---------------------------------------------------

    def test_iterative_methods_fill_history_and_lower_their_objective(self, method, runs):
        assert isinstance(type(method).iterative, bool)
        history = runs.first.history
        if not method.iterative:
            assert history == ()
            return
        assert len(history) >= 10, "log enough of the objective to see it go down (lower log_every)"
        assert all(isinstance(v, float) for v in history)
        first, last = history[:5], history[-5:]
        assert sum(last) / len(last) < sum(first) / len(first)

    def test_progress_reports_within_bounds(self, runs):
        calls = runs.progress
        assert calls, "a distiller should report progress"
        assert all(0 < done <= total for done, total in calls)
        assert calls[-1][0] == calls[-1][1]

    # -- checkpoints ------------------------------------------------------------------

    def test_a_resumed_distillation_ends_bit_identical_to_an_uninterrupted_one(self, method, data, runs):
        if method.iterative:
            assert_resumes_bit_identically(method, data, self.ipc, at=self.interrupt_at, prepared=runs.prepared)
            return
        # a one-shot method accepts a checkpoint, saves nothing and gives the same summary
        checkpoint = Checkpoint(Journal(), seconds=0)
        out = method.distill(data, self.ipc, seed=0, device=CPU, checkpoint=checkpoint)
        assert checkpoint.saves == 0 and checkpoint.restore() is None
        assert torch.equal(out.data.x, runs.first.data.x) and torch.equal(out.data.y, runs.first.data.y)

    # -- errors -----------------------------------------------------------------------

    def test_missing_class_is_a_one_line_error(self, method, data):
        last = data.num_classes - 1
        without = data.subset(torch.nonzero(data.y != last).flatten())
        name = re.escape(repr(data.classes[last]))
        with pytest.raises(DataError, match=rf"class {name} has no training images") as err:
            method.distill(without, self.ipc, seed=0, device=CPU)
        assert "\n" not in str(err.value)

    def test_too_small_class_is_a_one_line_error(self, method, data):
        if self.ipc < 2:
            pytest.skip("with ipc=1 a too-small class is a missing one")
        keep = torch.ones(len(data), dtype=torch.bool)
        keep[torch.nonzero(data.y == 1).flatten()[self.ipc - 1 :]] = False  # class 1 keeps ipc - 1 images
        small = data.subset(torch.nonzero(keep).flatten())
        name = re.escape(repr(data.classes[1]))
        with pytest.raises(DataError, match=rf"class {name} has {self.ipc - 1} images but ipc={self.ipc}") as err:
            method.distill(small, self.ipc, seed=0, device=CPU)
        assert "\n" not in str(err.value)

    @pytest.mark.parametrize("ipc", [0, -1, True, 1.5])
    def test_bad_ipc_is_a_one_line_error(self, method, data, ipc):
        with pytest.raises(ConfigError, match=r"distill\.ipc") as err:
            method.distill(data, ipc, seed=0, device=CPU)
        assert "\n" not in str(err.value)

    # -- identity ---------------------------------------------------------------------

    def test_registered_and_rebuilt_from_its_config(self, method):
        assert_registered(method, DISTILLERS, Distiller)

    def test_every_setting_has_a_default(self, method):
        assert isinstance(type(method)(), type(method))

    def test_docstring_cites_a_paper(self, method):
        assert_cites_a_paper(type(method))


class PreparedDistillerContract(DistillerContract):
    """:class:`DistillerContract` for a :class:`PreparedDistiller` (MTT, TESLA), plus its preparation."""

    def test_is_a_prepared_distiller(self, method):
        assert isinstance(method, PreparedDistiller), f"{type(method).__name__}: use DistillerContract"

    def test_preparation_is_cacheable(self, method, runs):
        # the pipeline stores prepare()'s output with torch.save and loads it without pickled code
        buffer = io.BytesIO()
        torch.save({"prepared": runs.prepared}, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)["prepared"]
        assert _tensors_equal(loaded, runs.prepared)
        # and rebuilds the method from the preparation settings alone
        params = method.prepare_params()
        assert set(params) == set(type(method).prepare_fields)
        assert type(method).for_prepare(params).prepare_params() == params


def assert_resumes_bit_identically(
    method: Distiller,
    train: ImageData,
    ipc: int,
    *,
    at: int | None = None,
    prepared: Any = None,
    seed: int = 0,
    **kwargs: Any,
) -> Summary:
    """Check that a distillation killed after iteration ``at`` and resumed from its checkpoint ends as one never killed.

    Three CPU runs of ``method`` on one torch thread: uninterrupted, without
    a checkpoint; with a ``Checkpoint(seconds=0)`` (in memory) that is killed
    right after saving iteration ``at`` (default: half the iterations); and a
    fresh run resuming from that state, after it has been through
    ``torch.save`` / ``torch.load`` as a journal on disk would. The resumed
    run must redo no iteration, save after every later iteration but the
    last, and give exactly (``torch.equal``) the same images, labels, soft
    labels, learned step size and history. A :class:`PreparedDistiller` runs
    :meth:`~PreparedDistiller.distill_prepared` on ``prepared`` (prepared
    here when None); ``kwargs`` go to every call (e.g. ``space=``). Returns
    the resumed summary.
    """
    if isinstance(method, PreparedDistiller) and prepared is None:
        prepared = method.prepare(train, seed=seed, device=CPU)

    def run(checkpoint: Checkpoint | None) -> Summary:
        if isinstance(method, PreparedDistiller):
            return method.distill_prepared(
                train, ipc, prepared, seed=seed, device=CPU, checkpoint=checkpoint, **kwargs
            )
        return method.distill(train, ipc, seed=seed, device=CPU, checkpoint=checkpoint, **kwargs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread for all three runs: a thread count can change float sums
    try:
        uninterrupted = run(None)
        total = len(uninterrupted.history)  # one value per iteration
        at = total // 2 if at is None else at
        assert 0 < at < total, f"interrupt at an iteration in 1..{total - 1}, not {at}"
        killed = _InterruptingCheckpoint(Journal(), at)
        with pytest.raises(_Interrupted):
            run(killed)
        assert killed.saved == list(range(1, at + 1)), "with seconds=0 every iteration is saved"
        buffer = io.BytesIO()
        torch.save(killed.journal.load_state(STATE), buffer)
        buffer.seek(0)
        journal = Journal()
        journal.save_state(STATE, torch.load(buffer, weights_only=False))
        again = _InterruptingCheckpoint(journal, None)
        resumed = run(again)
    finally:
        torch.set_num_threads(threads)
    # resumed after `at`: no iteration redone, none saved at the end (the summary is the result)
    assert again.saved == list(range(at + 1, total)), f"resumed run saved {again.saved}"
    a, b = uninterrupted, resumed
    assert torch.equal(a.data.x, b.data.x) and torch.equal(a.data.y, b.data.y)
    assert a.history == b.history
    assert (a.soft_labels is None) == (b.soft_labels is None)
    if a.soft_labels is not None:
        assert torch.equal(a.soft_labels, b.soft_labels)
    assert a.learned_lr == b.learned_lr and a.label_loss == b.label_loss
    return resumed


class _Interrupted(Exception):
    """The simulated kill of :class:`_InterruptingCheckpoint`."""


class _InterruptingCheckpoint(Checkpoint):
    """Saves every time asked (``seconds=0``), recording the iterations, and dies right after saving ``at``."""

    def __init__(self, journal: Journal, at: int | None) -> None:
        super().__init__(journal, seconds=0)
        self.at = at
        self.saved: list[int] = []

    def save(self, iteration: int, state: dict[str, Any]) -> None:
        super().save(iteration, state)
        self.saved.append(iteration)
        if iteration == self.at:
            raise _Interrupted


def _tensors_equal(a: Any, b: Any) -> bool:
    """Structural equality of nested lists/tuples/dicts of tensors (exact)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def recording_space(space: SearchSpace) -> tuple[SearchSpace, list[str]]:
    """A copy of ``space`` that appends every architecture it builds to the returned list."""
    built: list[str] = []

    class Recording(type(space)):  # type: ignore[misc, valid-type]
        def build(self, arch: str, **sizes: Any):
            built.append(arch)
            return super().build(arch, **sizes)

    settings = {f.name: getattr(space, f.name) for f in dataclasses.fields(space) if f.init}
    return Recording(**settings), built


class SpaceAwareDistillerContract:
    """Inherited tests for a distiller matching through random cells of the ranked space.

    Subclasses set :attr:`distiller` to a fast instance with ``networks:
    space``; :attr:`space` defaults to a tiny NB201 space (4 channels, one
    cell per stage, batch norm). Checked: it needs the space and says so in
    one line without it; one seed gives one summary and another seed another;
    the cells it builds differ across iterations; the summary is finite with
    ``ipc`` images per class; with ``networks: convnet`` a given space is
    ignored.
    """

    distiller: ClassVar[Distiller]
    space: ClassVar[SearchSpace] = NB201Space(channels=4, cells_per_stage=1, skip_disconnected=True)
    ipc: ClassVar[int] = 2

    @pytest.fixture(scope="class")
    @classmethod
    def method(cls) -> Distiller:
        method = getattr(cls, "distiller", None)
        assert isinstance(method, Distiller) and method.needs_space, (
            f"{cls.__name__} must set `distiller = <a Distiller instance with networks='space'>`"
        )
        return method

    @pytest.fixture(scope="class")
    @classmethod
    def runs(cls, method: Distiller) -> tuple[Summary, Summary, Summary, list[str]]:
        space, built = recording_space(cls.space)
        data = tiny_images()
        first = method.distill(data, cls.ipc, seed=0, device=CPU, space=space)
        drawn = list(built)
        again = method.distill(data, cls.ipc, seed=0, device=CPU, space=space)
        other = method.distill(data, cls.ipc, seed=1, device=CPU, space=space)
        return first, again, other, drawn

    def test_draws_different_cells_of_the_space(self, runs):
        *_, drawn = runs
        assert len(drawn) >= 2 and len(set(drawn)) > 1, f"built {drawn}"

    def test_summary_is_finite_with_ipc_images_per_class(self, runs):
        first = runs[0].data
        data = tiny_images()
        per_class = self.distiller.images_per_class(self.ipc)
        assert tuple(first.x.shape) == (data.num_classes * per_class, *data.shape)
        assert torch.isfinite(first.x).all()

    def test_same_seed_same_summary_other_seed_another(self, runs):
        first, again, other, _ = runs
        assert torch.equal(first.data.x, again.data.x) and first.history == again.history
        assert not torch.equal(first.data.x, other.data.x)

    def test_without_the_space_is_a_one_line_config_error(self, method):
        with pytest.raises(ConfigError, match=r"networks=space needs the search space") as err:
            method.distill(tiny_images(), self.ipc, seed=0, device=CPU)
        assert "\n" not in str(err.value)

    def test_the_convnet_setting_ignores_a_given_space(self, method):
        convnet = dataclasses.replace(method, networks="convnet")
        assert not convnet.needs_space
        space, built = recording_space(self.space)
        with_space = convnet.distill(tiny_images(), self.ipc, seed=0, device=CPU, space=space)
        without = convnet.distill(tiny_images(), self.ipc, seed=0, device=CPU)
        assert built == [] and torch.equal(with_space.data.x, without.data.x)
