"""Run a NAS search as an Optuna study and summarise it (best-so-far, regret, cost).

Each trial asks the sampler for one choice per code position of the space
(:mod:`proxynas.search.encoding`), decodes the architecture, and scores it with
the objective. The study is the record: every trial keeps the arch string and
its costs as user attributes, so a search in a shared storage can be resumed,
run by several workers, or read back with ``optuna.load_study``.

* A code the space rejects (for NAS-Bench-201 with ``skip_disconnected``, a
  cell whose output never sees its input) is PRUNED: it costs nothing, TPE
  counts it as worse than every completed trial, evolution ignores it.
* An arch already scored in this study is not trained again: the trial
  reuses that value and costs 0 s (NAS-benchmark practice is to count it as a
  query anyway, so it still takes one of the ``n_trials``).
* A two-objective study (NSGA-II) maximises the proxy and minimises a cost:
  the arch's parameters or its evaluation seconds.

The found architecture is the completed trial with the best proxy value
(the earliest one on ties); with a :class:`~proxynas.search.regret.Reference`
the result also has its ground truth and regret, after every trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from proxynas.errors import ArchError, ConfigError
from proxynas.search.encoding import suggest_code
from proxynas.search.objective import ArchObjective
from proxynas.search.regret import Reference
from proxynas.spaces.base import SearchSpace

Cost = Literal["params", "seconds"]
COSTS = ("params", "seconds")


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a search, in the order the trials were created."""

    number: int
    state: str
    arch: str
    value: float | None
    #: seconds this trial spent scoring (0 for duplicates and invalid archs)
    seconds: float
    duplicate_of: int | None = None
    reference: float | None = None


@dataclass(frozen=True)
class SearchResult:
    """A search's history and outcome. Curves have one entry per trial (``nan`` before the first result)."""

    study_name: str
    objective: str
    trials: tuple[TrialRecord, ...]
    #: best proxy value after each trial
    best_so_far: tuple[float, ...]
    #: ground truth of the best-by-proxy arch after each trial (when a reference was given)
    reference_so_far: tuple[float, ...] | None
    #: cumulative scoring seconds after each trial
    cost_so_far: tuple[float, ...]
    best_arch: str | None
    best_value: float | None
    reference_value: float | None
    reference_best: float | None
    regret: float | None
    search_seconds: float
    setup_seconds: float

    @property
    def n_trials(self) -> int:
        return len(self.trials)

    @property
    def n_evaluated(self) -> int:
        """Archs actually scored (trials that were neither duplicates nor invalid)."""
        return sum(1 for t in self.trials if t.state == "COMPLETE" and t.duplicate_of is None)

    @property
    def regret_so_far(self) -> tuple[float, ...] | None:
        if self.reference_so_far is None or self.reference_best is None:
            return None
        return tuple(self.reference_best - r for r in self.reference_so_far)

    def at(self, n: int) -> dict[str, float]:
        """Best value, reference, regret and cost after the first ``n`` trials."""
        if not 1 <= n <= self.n_trials:
            raise ConfigError(f"the search has {self.n_trials} trials; cannot report after {n}")
        out = {"trials": float(n), "best": self.best_so_far[n - 1], "seconds": self.cost_so_far[n - 1]}
        if self.reference_so_far is not None:
            out["reference"] = self.reference_so_far[n - 1]
            out["regret"] = self.regret_so_far[n - 1]
        return out


def create_study(
    name: str | None,
    storage: str | optuna.storages.BaseStorage | None,
    directions: tuple[str, ...] = ("maximize",),
    *,
    fresh: bool = False,
) -> optuna.Study:
    """The search study ``name`` (created, or loaded to resume; emptied first when ``fresh``)."""
    if fresh and name is not None and storage is not None:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass
    study = optuna.create_study(study_name=name, storage=storage, directions=list(directions), load_if_exists=True)
    have = tuple(d.name.lower() for d in study.directions)
    if have != tuple(directions):
        raise ConfigError(
            f"study {name} optimises {', '.join(have)} but this search needs {', '.join(directions)};"
            " use another study name (or --fresh)"
        )
    return study


def _previous(study: optuna.Study, arch: str) -> FrozenTrial | None:
    """The first completed trial of ``study`` that scored ``arch`` (read from storage: works across workers)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("arch") == arch and t.user_attrs.get("duplicate_of") is None:
            return t
    return None


def run_search(
    space: SearchSpace,
    objective: ArchObjective,
    sampler: optuna.samplers.BaseSampler,
    n_trials: int,
    study: optuna.Study,
    reference: Reference | None = None,
    *,
    cost: Cost = "params",
    progress: Callable[[TrialRecord, SearchResult], None] | None = None,
) -> SearchResult:
    """Run ``n_trials`` more trials of ``study`` with ``sampler``; the result covers every trial in the study.

    ``cost`` is the second objective of a two-objective study (ignored
    otherwise). ``progress(record, result)`` is called after each trial.
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0:
        raise ConfigError(f"n_trials must be an integer >= 0, got {n_trials!r}")
    if cost not in COSTS:
        raise ConfigError(f"unknown cost {cost!r}; choose one of: {', '.join(COSTS)}")
    n_objectives = len(study.directions)
    if n_objectives > 2 or (n_objectives == 2 and [d.name for d in study.directions] != ["MAXIMIZE", "MINIMIZE"]):
        raise ConfigError(
            f"study {study.study_name} has directions {[d.name.lower() for d in study.directions]};"
            " a search maximises the proxy, optionally minimising a cost: [maximize] or [maximize, minimize]"
        )
    if n_objectives == 1 and study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {study.study_name} minimises; proxies are maximised, use a maximize study")
    study.sampler = sampler

    def trial_cost(arch: str, arch_seconds: float) -> float:
        return objective.num_params(arch) if cost == "params" else arch_seconds

    def fn(trial: optuna.Trial) -> float | tuple[float, float]:
        arch = space.decode(suggest_code(trial, space))
        trial.set_user_attr("arch", arch)
        trial.set_user_attr("seconds", 0.0)
        try:
            arch = space.validate(arch)
        except ArchError as exc:
            trial.set_user_attr("invalid", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("arch", arch)
        if reference is not None:
            trial.set_user_attr("reference", reference.value(arch))
        prev = _previous(study, arch)
        if prev is not None:
            value, arch_seconds = prev.values[0], float(prev.user_attrs["arch_seconds"])
            trial.set_user_attr("duplicate_of", prev.number)
        else:
            ev = objective.evaluate(arch)
            value, arch_seconds = ev.value, ev.seconds
            trial.set_user_attr("seconds", arch_seconds)
            trial.set_user_attr("cached", ev.cached)
        trial.set_user_attr("arch_seconds", arch_seconds)
        if n_objectives == 2:
            c = trial_cost(arch, arch_seconds)
            trial.set_user_attr("cost", c)
            return value, c
        return value

    callbacks = []
    if progress is not None:

        def report(study: optuna.Study, frozen: FrozenTrial) -> None:
            result = collect(study, reference, objective)
            progress(_record(frozen), result)

        callbacks.append(report)
    study.optimize(fn, n_trials=n_trials, callbacks=callbacks)
    return collect(study, reference, objective)


def _record(t: FrozenTrial) -> TrialRecord:
    value = t.values[0] if t.state == TrialState.COMPLETE and t.values else None
    return TrialRecord(
        number=t.number,
        state=t.state.name,
        arch=t.user_attrs.get("arch", ""),
        value=value,
        seconds=float(t.user_attrs.get("seconds", 0.0)),
        duplicate_of=t.user_attrs.get("duplicate_of"),
        reference=t.user_attrs.get("reference"),
    )


def collect(study: optuna.Study, reference: Reference | None = None, objective: ArchObjective | None = None) -> SearchResult:
    """The :class:`SearchResult` of every finished trial of ``study`` (by trial number)."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    trials = [_record(t) for t in study.get_trials(deepcopy=False, states=finished) if "arch" in t.user_attrs]
    trials.sort(key=lambda r: r.number)
    best_so_far, ref_so_far, cost_so_far = [], [], []
    best: TrialRecord | None = None
    spent = 0.0
    for r in trials:
        spent += r.seconds
        # strict '>' keeps the earliest trial on ties: the arch found first is the one reported
        if r.value is not None and math.isfinite(r.value) and (best is None or r.value > best.value):
            best = r
        best_so_far.append(best.value if best is not None else math.nan)
        cost_so_far.append(spent)
        if reference is not None:
            ref_so_far.append(reference.value(best.arch) if best is not None else math.nan)
    ref_value = reference.value(best.arch) if reference is not None and best is not None else None
    return SearchResult(
        study_name=study.study_name,
        objective=getattr(objective, "name", ""),
        trials=tuple(trials),
        best_so_far=tuple(best_so_far),
        reference_so_far=tuple(ref_so_far) if reference is not None else None,
        cost_so_far=tuple(cost_so_far),
        best_arch=best.arch if best is not None else None,
        best_value=best.value if best is not None else None,
        reference_value=ref_value,
        reference_best=reference.best if reference is not None else None,
        regret=reference.best - ref_value if ref_value is not None else None,
        search_seconds=spent,
        setup_seconds=float(getattr(objective, "setup_seconds", 0.0)),
    )


def running_best(values: Sequence[float | None], *, maximize: bool = True) -> tuple[float, ...]:
    """The best value after each entry of ``values`` (``nan`` until the first finite one).

    None and non-finite entries (pruned or failed trials, archs without a
    reference value) are skipped, as :func:`collect` skips them.
    """
    out, best = [], math.nan
    for v in values:
        if v is not None and math.isfinite(v) and (math.isnan(best) or (v > best if maximize else v < best)):
            best = float(v)
        out.append(best)
    return tuple(out)


def trials_table(result: SearchResult) -> list[dict[str, Any]]:
    """One row per trial (for CSV artifacts): number, state, arch, value, best so far, regret so far, seconds."""
    regret = result.regret_so_far
    rows = []
    for i, t in enumerate(result.trials):
        row = {
            "trial": t.number,
            "state": t.state,
            "arch": t.arch,
            "value": t.value,
            "best_so_far": result.best_so_far[i],
            "seconds": t.seconds,
            "duplicate_of": t.duplicate_of,
        }
        if regret is not None:
            row["reference"] = t.reference
            row["regret_so_far"] = regret[i]
        rows.append(row)
    return rows
