"""Score one stage's architectures on many machines: one Optuna trial per arch.

The engine is the Optuna RDB study of :mod:`proxynas.distributed`, not Ray:
Optuna is already a dependency and the project's worker engine (tuning,
search), the only shared service is a database (sqlite on one machine,
PostgreSQL across machines), and its heartbeats already re-enqueue the trial
of a worker that died, so a lost worker costs only the arch it was scoring.

Every process that runs the stage, on this or any machine, calls
:func:`score_distributed` with the same arguments:

* **One study per stage** (``study_name``, e.g. the stage's cache key). The
  process whose ``create_study`` wins (the database's unique study name
  decides a race) enqueues one trial per arch (param and user attr
  :data:`ARCH_INDEX`, user attr :data:`ARCH_ATTR`), then sets the study user
  attr :data:`ENQUEUED_ATTR` to their number; every other process waits for
  that mark before it takes a trial, so no arch is enqueued twice and no
  trial is sampled at random.
* **Trials through** :func:`~proxynas.distributed.run_worker`: the objective
  scores the arch (or the group of archs a proxy trains at once,
  :func:`proxynas.evaluation.chunks`; its trial then names them joined by
  ", ") in-process, as serial :func:`~proxynas.evaluation.score_all`
  does, and keeps the raw score as JSON in the user attr :data:`RESULT_ATTR`
  (a float, a multi-value proxy's ``values`` and ``curve``, a combining
  proxy's components) and its time in :data:`SECONDS_ATTR`. The trial's
  value is that time: a proxy may score NaN, which Optuna would take for a
  failed trial.
* **The same results everywhere.** Once every arch has a COMPLETE trial, each
  process builds ``score_all``'s list from the stored scores (the first
  complete trial of each arch), so a combining proxy's ``combine`` runs over
  the whole population in every process. A rerun with the same study only
  scores what is missing.

Failures:

* A worker killed mid-arch (``kill -9``, a lost machine): its trial's
  heartbeat goes stale and Optuna enqueues a retry that another process runs.
  A worker stopped by Ctrl-C re-enqueues its arch itself before the
  ``KeyboardInterrupt`` propagates.
* A proxy's error (``DivergenceError``, ``ConfigError``...) is not retried:
  scores depend only on proxy, arch and seed, so a retry fails the same way.
  The trial fails with the one-line error in :data:`ERROR_ATTR` and the error
  propagates unchanged in the process where it happened. Every other process
  stops after its current arch (or at once on a rerun of that study) with an
  error of the same class (:class:`~proxynas.errors.PipelineError` for an
  error that is not a proxynas one), in one line naming the arch, its index
  and the original message. The study keeps the failure: delete it
  (``optuna delete-study``) to score again under the same name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from typing import Any, Sequence

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from proxynas import errors
from proxynas.distributed import OVER_BUDGET, RETRY_ATTR, RETRY_HISTORY_ATTR, open_storage, run_worker
from proxynas.errors import ConfigError, PipelineError, ProxynasError
from proxynas.evaluation import _progress_info, _results, _score_chunk, chunks, decode_raw, encode_raw
from proxynas.progress import Progress, null_progress
from proxynas.proxies.base import Proxy, ProxyContext

#: trial param: the position of the trial's arch in ``archs``
ARCH_INDEX = "arch_index"
#: trial user attrs: the arch string, its raw score (JSON), scoring seconds, a proxy error
ARCH_ATTR = "arch"
RESULT_ATTR = "result"
SECONDS_ATTR = "seconds"
ERROR_ATTR = "error"
#: study user attr, set by the creating process once every arch is enqueued: their number
ENQUEUED_ATTR = "archs_enqueued"
#: Optuna's record of the attempts before a retry (RetryHeartbeatStaleTrialCallback)
HISTORY_ATTR = RETRY_HISTORY_ATTR


def score_distributed(
    proxy: Proxy,
    archs: list[str],
    ctx: ProxyContext,
    *,
    storage: str,
    study_name: str,
    progress: Progress = null_progress,
    poll_seconds: float = 1.0,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    enqueue_timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """What ``score_all(proxy, archs, ctx)`` returns, with the archs shared by every process calling this.

    ``storage`` is a database URL (``sqlite:///path.db``, ``postgresql://...``)
    and ``study_name`` names the stage; every process of the stage passes the
    same arguments. A trial whose heartbeat (every ``heartbeat_interval``
    seconds) is older than ``grace_period`` (default twice the interval) is
    retried elsewhere. ``progress(done, total, ...)`` counts the archs scored
    by all processes. A process that finds the study created but not filled
    for ``enqueue_timeout`` seconds (its creator died) gives up with a
    ConfigError.
    """
    if not archs:
        return _results(proxy, [], [])
    # a proxy training several archs at once (arch_batch) gets one trial per group of them
    groups = chunks(proxy, list(archs))
    tasks = [", ".join(group) for group in groups]
    db = open_storage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    study = _create_or_join(study_name, db, tasks, poll_seconds=poll_seconds, timeout=enqueue_timeout)
    watch = _Watch(proxy, tasks, study_name, progress, sizes=[len(g) for g in groups])
    objective = _objective(proxy, groups, ctx, watch)
    lost_after = float(grace_period if grace_period is not None else 2 * heartbeat_interval)
    lost_since: dict[int, float] = {}
    # One thread on a CPU, as serial score_all: float reductions depend on the thread count.
    previous = torch.get_num_threads()
    if ctx.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        while True:
            stand = watch.check(study.get_trials(deepcopy=False))
            if len(stand.complete) == len(tasks):
                break
            if stand.lost:
                now = time.monotonic()
                lost_since = {i: lost_since.get(i, now) for i in stand.lost}
                # a stale trial is failed a moment before its retry is enqueued: give the retry time
                overdue = [i for i, since in lost_since.items() if now - since > lost_after]
                if overdue:
                    raise _lost(study_name, tasks, overdue[0], stand)
                time.sleep(poll_seconds)
            try:
                run_worker(study, objective, len(tasks), catch=(), poll_seconds=poll_seconds, callbacks=[watch])
            except KeyboardInterrupt:
                _retry_interrupted(study, watch.in_flight)
                raise
    finally:
        torch.set_num_threads(previous)
    scored = [result for i in range(len(tasks)) for result in _decode(proxy, stand.complete[i])]
    return _results(proxy, archs, scored)


def _create_or_join(
    name: str, storage: optuna.storages.BaseStorage, archs: Sequence[str], *, poll_seconds: float, timeout: float
) -> optuna.Study:
    """The stage's study, filled with one waiting trial per arch exactly once however many processes race."""
    last: Exception | None = None
    for attempt in range(5):
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        except optuna.exceptions.DuplicatedStudyError:  # another process created it: wait for its archs
            return _joined(name, storage, archs, poll_seconds=poll_seconds, timeout=timeout)
        except Exception as exc:  # e.g. the schema still being created by another process
            last = exc
            time.sleep(0.2 * (attempt + 1))
            continue
        for index, arch in enumerate(archs):
            study.enqueue_trial({ARCH_INDEX: index}, user_attrs={ARCH_ATTR: arch, ARCH_INDEX: index})
        study.set_user_attr(ENQUEUED_ATTR, len(archs))
        return study
    raise ConfigError(f"could not create or load study {name!r}: {last}")


def _joined(
    name: str, storage: optuna.storages.BaseStorage, archs: Sequence[str], *, poll_seconds: float, timeout: float
) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=storage)
    seen, since = -1, time.monotonic()
    while ENQUEUED_ATTR not in study.user_attrs:
        count = len(study.get_trials(deepcopy=False))
        if count != seen:  # the creator is still enqueueing
            seen, since = count, time.monotonic()
        elif time.monotonic() - since > timeout:
            raise ConfigError(
                f"study {name!r} holds {count} of {len(archs)} archs and nobody has enqueued more for "
                f"{timeout:g} s (its creator stopped); delete it (optuna delete-study --study-name "
                f"{name!r} --storage <url>) and rerun"
            )
        time.sleep(poll_seconds)
    enqueued: dict[int, str] = {}
    for t in study.get_trials(deepcopy=False):
        enqueued.setdefault(t.user_attrs.get(ARCH_INDEX, -1), t.user_attrs.get(ARCH_ATTR))
    if study.user_attrs[ENQUEUED_ATTR] != len(archs) or any(enqueued.get(i) != a for i, a in enumerate(archs)):
        raise ConfigError(
            f"study {name!r} already holds other archs than the {len(archs)} given; "
            "give each stage its own study name (its cache key)"
        )
    return study


@dataclasses.dataclass
class _Standing:
    """Where every arch of the study stands."""

    complete: dict[int, FrozenTrial]  # arch index -> its first COMPLETE trial
    failed: FrozenTrial | None  # the first trial a proxy error failed
    lost: list[int]  # archs nothing is scoring or will score (no result, no error)
    attempts: dict[int, int]  # arch index -> trials that scored it or started to


def _stand(trials: Sequence[FrozenTrial], n: int) -> _Standing:
    """Read off ``trials``; an arch's index is a user attr, as a waiting trial has no params yet."""
    complete: dict[int, FrozenTrial] = {}
    pending: set[int] = set()
    attempts: dict[int, int] = {}
    failed = None
    for t in sorted(trials, key=lambda t: t.number):
        index = t.user_attrs.get(ARCH_INDEX)
        if index is None:
            continue
        if t.state == TrialState.COMPLETE:
            complete.setdefault(index, t)
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            pending.add(index)
        elif t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs and failed is None:
            failed = t
        if not (t.state == TrialState.PRUNED and t.user_attrs.get(OVER_BUDGET)):
            attempts[index] = attempts.get(index, 0) + (t.state != TrialState.WAITING)
    lost = sorted(set(range(n)) - set(complete) - pending - ({failed.user_attrs[ARCH_INDEX]} if failed else set()))
    return _Standing(complete, failed, lost, attempts)


class _Watch:
    """Reports progress and stops this process once another's arch failed (a run_worker callback)."""

    def __init__(
        self, proxy: Proxy, archs: Sequence[str], study_name: str, progress: Progress, sizes: Sequence[int]
    ) -> None:
        # ``archs``: one entry per trial (a group of archs trained at once, joined by ", ")
        self.proxy, self.archs, self.study_name, self.progress = proxy, archs, study_name, progress
        self.sizes, self.total = list(sizes), sum(sizes)
        self.done = 0
        self.in_flight: int | None = None  # number of the trial this process is scoring

    def check(self, trials: Sequence[FrozenTrial], info: dict[str, Any] | None = None) -> _Standing:
        now = _stand(trials, len(self.archs))
        if now.failed is not None:
            raise _failure(self.study_name, now.failed)
        scored = sum(self.sizes[i] for i in now.complete)
        if scored > self.done or info:
            self.done = max(self.done, scored)
            self.progress(self.done, self.total, **(info or {}))
        return now

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        info = None
        if trial.state == TrialState.COMPLETE:
            info = _progress_info(self.proxy, _decode(self.proxy, trial)[0][0])
        self.check(study.get_trials(deepcopy=False), info)

    def epochs(self, index: int) -> Progress:
        """One trial's training progress, reported as part of the population's (``arch``, ``epoch``)."""
        first = sum(self.sizes[:index]) + 1
        label: int | str = first if self.sizes[index] == 1 else f"{first}-{first + self.sizes[index] - 1}"

        def report(done: int, epochs: int, **info: float) -> None:
            self.progress(self.done, self.total, arch=label, epoch=f"{done}/{epochs}", **info)

        return report


def _objective(proxy: Proxy, groups: Sequence[list[str]], ctx: ProxyContext, watch: _Watch):
    def objective(trial: optuna.Trial) -> float:
        index = trial.suggest_int(ARCH_INDEX, 0, len(groups) - 1)
        watch.in_flight = trial.number
        try:
            results = _score_chunk(proxy, dataclasses.replace(ctx, progress=watch.epochs(index)), groups[index])
        except Exception as exc:
            with contextlib.suppress(Exception):  # the proxy's error matters more than a lost record
                trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {_one_line(exc)}")
            raise
        trial.set_user_attr(RESULT_ATTR, json.dumps([json.dumps(encode_raw(raw)) for raw, _ in results]))
        trial.set_user_attr(SECONDS_ATTR, [seconds for _, seconds in results])
        watch.in_flight = None
        return sum(seconds for _, seconds in results)

    return objective


def _decode(proxy: Proxy, trial: FrozenTrial) -> list[tuple[Any, float]]:
    """``[(raw score, seconds)]`` of the trial's archs, as :func:`proxynas.evaluation._score_chunk` gave them."""
    return [
        (decode_raw(proxy, json.loads(encoded)), float(seconds))
        for encoded, seconds in zip(json.loads(trial.user_attrs[RESULT_ATTR]), trial.user_attrs[SECONDS_ATTR])
    ]


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _failure(study_name: str, trial: FrozenTrial) -> ProxynasError:
    """The error another process's proxy raised, as one line naming the arch (same class if a proxynas one)."""
    kind, _, message = trial.user_attrs[ERROR_ATTR].partition(": ")
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, ProxynasError)):
        cls, message = PipelineError, trial.user_attrs[ERROR_ATTR]
    where = f"arch {trial.user_attrs.get(ARCH_ATTR)} (#{trial.user_attrs.get(ARCH_INDEX)})"
    return cls(f"{where} failed in a worker of study {study_name!r} (trial {trial.number}): {message}")


def _lost(study_name: str, archs: Sequence[str], index: int, now: _Standing) -> PipelineError:
    return PipelineError(
        f"arch {archs[index]} (#{index}) of study {study_name!r} has no score and no worker left to score it: "
        f"{now.attempts.get(index, 0)} attempts stopped without one (killed, out of memory?) and the retries "
        f"ran out; delete the study (optuna delete-study --study-name {study_name!r} --storage <url>) and rerun"
    )


def _retry_interrupted(study: optuna.Study, number: int | None) -> None:
    """Enqueue again the arch a Ctrl-C stopped (Optuna fails such a trial and never retries it).

    The retry carries Optuna's retry attributes with ``failed_trial`` set to
    the interrupted trial, so :func:`proxynas.distributed.budget` gives it
    that trial's slot.
    """
    if number is None:
        return
    with contextlib.suppress(Exception):  # the interrupt matters more; a rerun reports the arch lost
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        if trial.state != TrialState.FAIL or ERROR_ATTR in trial.user_attrs:
            return
        history = [*trial.system_attrs.get(HISTORY_ATTR, []), trial.number]
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs=trial.user_attrs,
                system_attrs={**trial.system_attrs, RETRY_ATTR: trial.number, HISTORY_ATTR: history},
            )
        )
