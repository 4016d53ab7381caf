"""Many workers on one study: nothing lost, nothing run twice, dead workers' trials retried."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from proxynas.distributed import OVER_BUDGET, RETRY_ATTR, budget, open_storage, open_study, run_worker
from proxynas.errors import ConfigError

N_TASKS = 12
CTX = multiprocessing.get_context("fork")


def _objective(log_dir: str, slow_task: int | None = None):
    """Each trial evaluates one enqueued task; the task id is logged to a file per evaluation."""

    def objective(trial: optuna.Trial) -> float:
        task = trial.suggest_int("task", 0, N_TASKS - 1)
        Path(log_dir, f"{os.getpid()}-{trial.number}-{task}").touch()
        if task == slow_task:
            Path(log_dir, "slow-started").touch()
            time.sleep(120)  # killed before it ends
        time.sleep(0.05)
        return float(task)

    return objective


def _worker(url: str, log_dir: str, slow_task: int | None, out) -> None:
    storage = open_storage(url, heartbeat_interval=1, grace_period=3)
    study = open_study("shared", storage)
    out.put(run_worker(study, _objective(log_dir, slow_task), N_TASKS, poll_seconds=0.2))


def _enqueue(url: str) -> None:
    study = open_study("shared", open_storage(url, heartbeat_interval=1, grace_period=3))
    for task in range(N_TASKS):
        study.enqueue_trial({"task": task})


def _evaluated_tasks(log_dir: str) -> list[int]:
    return sorted(int(p.name.rsplit("-", 1)[1]) for p in Path(log_dir).iterdir() if p.name[0].isdigit())


def _check_every_task_completed_once(url: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name="shared", storage=url).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["task"] for t in complete) == list(range(N_TASKS))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert budget(trials).used == N_TASKS
    return trials


def _start(url: str, log_dir: str, slow_task=None):
    out = CTX.Queue()
    proc = CTX.Process(target=_worker, args=(url, log_dir, slow_task, out))
    proc.start()
    return proc, out


def _three_workers(url: str, log_dir: str) -> None:
    _enqueue(url)
    procs = [_start(url, log_dir) for _ in range(3)]
    counts = [out.get(timeout=120) for _, out in procs]
    for proc, _ in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    trials = _check_every_task_completed_once(url)
    # every evaluation that ran is one completed trial: no task was evaluated twice
    assert _evaluated_tasks(log_dir) == list(range(N_TASKS))
    assert sum(counts) == N_TASKS and len(trials) == N_TASKS + sum(
        bool(t.user_attrs.get(OVER_BUDGET)) for t in trials
    )


def _killed_worker_is_retried(url: str, log_dir: str, workers: int) -> None:
    _enqueue(url)
    victim, _ = _start(url, log_dir, slow_task=3)
    deadline = time.monotonic() + 60
    while not Path(log_dir, "slow-started").exists():
        assert time.monotonic() < deadline, "the slow trial never started"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=10)
    others = [_start(url, log_dir) for _ in range(workers)]
    for proc, out in others:
        out.get(timeout=120)
        proc.join(timeout=30)
        assert proc.exitcode == 0
    trials = _check_every_task_completed_once(url)
    dead = [t for t in trials if t.state == TrialState.FAIL]
    assert len(dead) == 1 and dead[0].params["task"] == 3
    retry = [t for t in trials if t.system_attrs.get(RETRY_ATTR) == dead[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == {"task": 3}
    # task 3 ran twice (killed, then retried); every other task exactly once
    evaluated = _evaluated_tasks(log_dir)
    assert evaluated.count(3) == 2 and sorted(set(evaluated)) == list(range(N_TASKS))
    assert len(evaluated) == N_TASKS + 1


@pytest.fixture()
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"




def test_three_workers_share_one_study_sqlite(sqlite_url, tmp_path):
    _three_workers(sqlite_url, str(tmp_path))


def test_killed_worker_trial_is_retried_sqlite(sqlite_url, tmp_path):
    _killed_worker_is_retried(sqlite_url, str(tmp_path), workers=1)


def test_two_workers_and_a_killed_one_on_postgresql(postgres_url, tmp_path):
    _killed_worker_is_retried(postgres_url, str(tmp_path), workers=2)


def test_racing_study_creation_gives_one_study(sqlite_url):
    def create(out):
        open_study("raced", open_storage(sqlite_url))
        out.put(True)

    out = CTX.Queue()
    procs = [CTX.Process(target=create, args=(out,)) for _ in range(4)]
    for p in procs:
        p.start()
    assert all(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert [s.study_name for s in optuna.get_all_study_summaries(sqlite_url)] == ["raced"]


def test_budget_ignores_retried_attempts_and_over_budget_skips():
    study = optuna.create_study()
    a = study.ask()
    study.tell(a, state=TrialState.FAIL)
    retry = optuna.trial.create_trial(params={}, distributions={}, value=1.0, system_attrs={RETRY_ATTR: 0})
    study.add_trial(retry)
    skipped = study.ask()
    skipped.set_user_attr(OVER_BUDGET, True)
    study.tell(skipped, state=TrialState.PRUNED)
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=2.0))
    state = budget(study.get_trials())
    assert state.counted == (1, 3) and state.used == 2 and state.running == 0


def test_a_task_whose_worker_dies_twice_holds_one_slot():
    # Optuna's retry of a retry names the original trial in failed_trial and lists both earlier attempts
    study = optuna.create_study()
    study.tell(study.ask(), state=TrialState.FAIL)  # 0: the first worker died
    study.add_trial(optuna.trial.create_trial(
        params={}, distributions={}, state=TrialState.FAIL, system_attrs={RETRY_ATTR: 0, "retry_history": [0]}
    ))  # 1: its retry's worker died too
    study.add_trial(optuna.trial.create_trial(
        params={}, distributions={}, value=1.0, system_attrs={RETRY_ATTR: 0, "retry_history": [0, 1]}
    ))  # 2: the second retry finished
    assert budget(study.get_trials()).counted == (2,)


def test_single_worker_stops_at_the_budget(sqlite_url):
    study = open_study("solo", open_storage(sqlite_url))
    done = run_worker(study, lambda t: t.suggest_float("x", 0, 1), 5)
    assert done == 5 and len(study.trials) == 5


def test_bad_storage_and_budget_are_one_line_errors(sqlite_url):
    with pytest.raises(ConfigError, match="not a database URL"):
        open_storage("study.db")
    with pytest.raises(ConfigError, match="n_trials must be >= 1"):
        run_worker(open_study("x", open_storage(sqlite_url)), lambda t: 0.0, 0)
