"""Many workers, one Optuna study: storage, safe study creation and the worker loop.

Scaling out is Optuna's own business: every worker (a process on this or any
machine) opens the same RDB storage (sqlite on one machine, PostgreSQL across
machines) and takes trials from it; there is no scheduler of ours. What this
module adds is the bookkeeping a shared trial budget needs:

* **Heartbeats.** Storages are opened with Optuna's heartbeat, so a worker
  killed mid-trial (``kill -9``, a lost machine) leaves a trial whose heartbeat
  stops; the next worker to look marks it failed and
  :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues a copy with the
  same parameters, which the next free worker runs.
* **A budget of N slots.** Workers stop once the study holds ``n_trials``
  evaluations that count (running, waiting, finished, but not the stale
  attempts that were retried). When workers race for the last slot, the trial
  with the lower number wins and the other is closed as pruned with the user
  attribute ``over_budget`` (it evaluated nothing), so no slot is run twice.
* **No lost work.** A worker whose budget is spent still waits while other
  workers' trials are running, so a trial retried after its worker died is
  picked up even if it was the last one.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from proxynas.errors import ConfigError, DivergenceError
from proxynas.storage import prepare_sqlite

#: the system attribute RetryHeartbeatStaleTrialCallback puts on a retry (the failed trial's number)
RETRY_ATTR = "failed_trial"
#: the system attribute listing every earlier attempt of a retried trial
RETRY_HISTORY_ATTR = "retry_history"
OVER_BUDGET = "over_budget"


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    max_retry: int = 3,
) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage with heartbeats and retries of dead workers' trials.

    ``url`` is an SQLAlchemy URL: ``sqlite:///path.db`` on one machine,
    ``postgresql://user:pass@host/db`` across machines (needs ``psycopg``).
    A trial whose heartbeat is older than ``grace_period`` seconds (default
    2x the interval) is failed and re-enqueued, at most ``max_retry`` times.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"storage {url!r} is not a database URL; use sqlite:///path.db or postgresql://user@host/db"
        )
    prepare_sqlite(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # several processes write one file: wait for the lock instead of failing at once
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    last: Exception | None = None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                )
            if url.startswith("sqlite"):
                _serializable_sqlite(storage.engine)
            return storage
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"storage {url.split('://')[0]}:// needs the {exc.name!r} package; pip install 'psycopg[binary]'"
            ) from None
        except Exception as exc:  # two workers creating the schema at once: one loses, then sees it
            last = exc
            time.sleep(0.2 * (attempt + 1))
    raise ConfigError(f"could not open storage {url}: {last}")


def _serializable_sqlite(engine) -> None:
    """Make every SQLite transaction take the write lock at BEGIN.

    Python's sqlite3 driver runs a SELECT outside any transaction, so two
    workers can both read a WAITING trial and both mark it RUNNING (the trial
    then runs twice). ``BEGIN IMMEDIATE`` serialises read-then-write; this is
    SQLAlchemy's documented recipe for SQLite transactions.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections predate the listeners


def open_study(
    name: str,
    storage: optuna.storages.BaseStorage | str,
    *,
    directions: Sequence[str] = ("maximize",),
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create ``name`` or join it if another worker already did (safe when they race)."""
    last: Exception | None = None
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=name,
                storage=storage,
                directions=list(directions),
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except optuna.exceptions.DuplicatedStudyError as exc:  # lost a creation race: load it
            last = exc
        except Exception as exc:  # e.g. the unique constraint raised by the RDB itself
            last = exc
        time.sleep(0.2 * (attempt + 1))
        try:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            continue
    raise ConfigError(f"could not create or load study {name!r}: {last}")


@dataclass(frozen=True)
class Budget:
    """How the study's trials stand against a budget of ``n_trials`` slots."""

    counted: tuple[int, ...]  # numbers of the trials that hold a slot
    running: int
    waiting: int

    @property
    def used(self) -> int:
        return len(self.counted)


def budget(trials: Sequence[FrozenTrial]) -> Budget:
    """Which trials hold a slot: all but retried stale attempts and over-budget skips."""
    # Optuna's retry of a retry names the *original* trial in ``failed_trial``; every attempt
    # it replaces is in its ``retry_history``, so a second death of the same task still
    # hands its slot on instead of holding one more
    retried = {t.system_attrs.get(RETRY_ATTR) for t in trials} - {None}
    retried |= {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY_ATTR, ())}
    counted = []
    for t in trials:
        if t.state == TrialState.FAIL and t.number in retried:
            continue  # its retry holds the slot
        if t.state == TrialState.PRUNED and t.user_attrs.get(OVER_BUDGET):
            continue
        counted.append(t.number)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return Budget(tuple(sorted(counted)), running, waiting)


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    n_trials: int,
    *,
    catch: tuple[type[Exception], ...] = (DivergenceError,),
    poll_seconds: float = 1.0,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> int:
    """Evaluate trials of ``study`` until it holds ``n_trials``; return how many this worker finished.

    Any number of workers may run this on the same study at once. ``catch``
    lists the objective errors that fail one trial without stopping the worker
    (a diverging architecture is a result, not a crash).
    """
    if n_trials < 1:
        raise ConfigError(f"n_trials must be >= 1, got {n_trials}")
    evaluated: list[int] = []

    def guarded(trial: optuna.Trial) -> Any:
        # Racing workers may each open a trial for the last slot; the lower number keeps it.
        counted = budget(study.get_trials(deepcopy=False)).counted
        if trial.number in counted and counted.index(trial.number) >= n_trials:
            trial.set_user_attr(OVER_BUDGET, True)
            raise optuna.TrialPruned(f"budget of {n_trials} trials already taken")
        storage = study._storage  # the RDB storage, possibly behind Optuna's cache wrapper
        if hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval() is not None:
            # Optuna's heartbeat thread may not have written yet; a trial with no
            # heartbeat is never detected as stale, so a worker killed now would lose it.
            storage.record_heartbeat(trial._trial_id)
        evaluated.append(trial.number)
        return objective(trial)

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)  # a no-op unless the storage has heartbeats
        state = budget(study.get_trials(deepcopy=False))
        if state.waiting or state.used < n_trials:
            study.optimize(guarded, n_trials=1, catch=catch, callbacks=list(callbacks))
            continue
        if state.running == 0:
            return len(evaluated)
        time.sleep(poll_seconds)  # others still running: one may die and need a retry
