"""A stage's archs shared by processes through one Optuna study: each scored once, results as score_all's."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from proxynas.distributed import OVER_BUDGET, RETRY_ATTR
from proxynas.distributed_scoring import ARCH_INDEX, ERROR_ATTR, score_distributed
from proxynas.errors import ConfigError, DivergenceError, PipelineError
from proxynas.evaluation import score_all
from proxynas.proxies import ParamsProxy, Proxy
from proxynas.proxies.base import Scored
from proxynas.testing.proxies import SPACE, make_ctx, make_data

CTX = multiprocessing.get_context("fork")
ARCHS = SPACE.sample(8, seed=3)
FAST = {"poll_seconds": 0.1, "heartbeat_interval": 1, "grace_period": 3}


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ctx():
    return make_ctx(make_data(n=20))


@pytest.fixture()
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'stages.db'}"


@pytest.fixture()
def start():
    """Fork ``target(*args)``; whatever is still running at the end of the test (a stalled worker) is killed."""
    procs = []

    def fork(target, *args):
        procs.append(CTX.Process(target=target, args=args))
        procs[-1].start()
        return procs[-1]

    yield fork
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=10)




@dataclass(frozen=True)
class _Ords(Proxy):
    """A cheap deterministic score of the arch string; logs every evaluation to ``log_dir``.

    The first process to score ``stall`` writes its pid to ``log_dir/stalled``
    and hangs there (a test kills it); ``interrupt`` is interrupted once (Ctrl-C).
    """

    name = "ords"
    log_dir: str = ""
    stall: str = ""
    interrupt: str = ""

    def score(self, arch: str, ctx) -> Any:
        if self.log_dir:
            Path(self.log_dir, f"eval-{os.getpid()}-{time.monotonic_ns()}").write_text(arch)
            marker = Path(self.log_dir, "stalled")
            if arch == self.stall and not marker.exists():
                Path(self.log_dir, "tmp").write_text(str(os.getpid()))
                Path(self.log_dir, "tmp").rename(marker)
                time.sleep(120)
            if arch == self.interrupt and not marker.exists():
                marker.touch()
                raise KeyboardInterrupt
            time.sleep(0.05)
        return sum(map(ord, arch)) * (ctx.seed + 1) / len(arch)


@dataclass(frozen=True)
class _Curves(_Ords):
    """Several values and a learning curve from one scoring."""

    name = "curves"
    records_curves = True

    def value_names(self) -> tuple[str, ...]:
        return ("acc", "sotl")

    def score_values(self, arch: str, ctx) -> Scored:
        v = float(self.score(arch, ctx))
        curve = tuple({"epoch": e, "train_loss": v / e, "val_acc": None if e < 2 else v} for e in (1, 2))
        return Scored({"acc": v, "sotl": -v / 3}, curve)


@dataclass(frozen=True)
class _Ranks(_Ords):
    """A combining proxy: each value depends on the whole population's components."""

    name = "ranks"
    combines = True

    def score(self, arch: str, ctx) -> Any:
        return {"ords": super().score(arch, ctx), "convs": float(arch.count("conv"))}

    def combine(self, raw) -> list[float]:
        def ranks(key: str) -> list[int]:
            order = sorted(range(len(raw)), key=lambda i: raw[i][key])
            return [order.index(i) for i in range(len(raw))]

        return [float(a + b) for a, b in zip(ranks("ords"), ranks("convs"))]


@dataclass(frozen=True)
class _Failing(Proxy):
    name = "failing"
    error: type = DivergenceError

    def score(self, arch: str, ctx) -> float:
        time.sleep(0.05)  # long enough for a second process to take some archs
        if arch == ARCHS[2]:
            raise self.error(f"training {arch}: loss became nan at epoch 0; lower proxy.lr")
        return 1.0


def _plain(results: list[dict]) -> list[dict]:
    """Results without the scoring times, which differ from run to run."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in results]


def _evaluated(log_dir: Path) -> list[str]:
    return sorted(p.read_text() for p in log_dir.glob("eval-*"))


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def _one_complete_trial_per_arch(trials) -> None:
    complete = sorted(t.params[ARCH_INDEX] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == list(range(len(ARCHS)))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.parametrize("proxy", [ParamsProxy(), _Ords(), _Curves(), _Ranks()], ids=lambda p: type(p).__name__)
def test_one_process_gives_what_score_all_gives(proxy, ctx, url):
    calls = []
    got = score_distributed(proxy, ARCHS, ctx, storage=url, study_name="stage",
                            progress=lambda d, t, **i: calls.append((d, t)), **FAST)
    assert _plain(got) == _plain(score_all(proxy, ARCHS, ctx))
    assert all(r["seconds"] >= 0 for r in got)
    assert calls[-1] == (len(ARCHS), len(ARCHS)) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    _one_complete_trial_per_arch(_trials(url, "stage"))


def test_a_rerun_reads_the_study_instead_of_scoring_again(ctx, url, tmp_path):
    proxy = _Curves(log_dir=str(tmp_path))
    first = score_distributed(proxy, ARCHS, ctx, storage=url, study_name="stage", **FAST)
    assert score_distributed(proxy, ARCHS, ctx, storage=url, study_name="stage", **FAST) == first
    assert _evaluated(tmp_path) == sorted(ARCHS)
    assert score_distributed(proxy, [], ctx, storage=url, study_name="empty") == score_all(proxy, [], ctx)


def _worker(proxy: Proxy, url: str, name: str, out, barrier=None) -> None:
    if barrier is not None:
        barrier.wait(timeout=30)
    ctx = make_ctx(make_data(n=20))
    out.put((os.getpid(), score_distributed(proxy, ARCHS, ctx, storage=url, study_name=name, **FAST)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_killed_worker_loses_only_the_arch_it_was_scoring(backend, ctx, tmp_path, request, start):
    url = request.getfixturevalue("url" if backend == "sqlite" else "postgres_url")
    proxy = _Ords(log_dir=str(tmp_path), stall=ARCHS[3])
    out = CTX.Queue()
    procs = [start(_worker, proxy, url, "stage", out) for _ in range(2)]
    marker = tmp_path / "stalled"
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "no worker reached the stalling arch"
        time.sleep(0.02)
    victim = int(marker.read_text())
    os.kill(victim, signal.SIGKILL)
    pid, results = out.get(timeout=60)
    assert pid != victim
    for p in procs:
        p.join(timeout=30)
    assert sorted(p.exitcode for p in procs) == [-signal.SIGKILL, 0]
    assert _plain(results) == _plain(score_all(_Ords(), ARCHS, ctx))
    trials = _trials(url, "stage")
    _one_complete_trial_per_arch(trials)
    dead = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.params[ARCH_INDEX] for t in dead] == [3]
    retry = [t for t in trials if t.system_attrs.get(RETRY_ATTR) == dead[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    # the killed arch was scored twice (killed, retried), every other arch exactly once
    assert _evaluated(tmp_path) == sorted(ARCHS + [ARCHS[3]])


def test_processes_creating_the_study_at_once_enqueue_each_arch_once(url, tmp_path, start):
    proxy = _Ords(log_dir=str(tmp_path))
    out, barrier = CTX.Queue(), CTX.Barrier(3)
    procs = [start(_worker, proxy, url, "raced", out, barrier) for _ in range(3)]
    results = [out.get(timeout=60)[1] for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results[0] == results[1] == results[2]
    trials = _trials(url, "raced")
    # racing for the last arch, a worker may open a trial that run_worker closes unrun as over budget
    assert len([t for t in trials if not t.user_attrs.get(OVER_BUDGET)]) == len(ARCHS)
    skipped = [t for t in trials if t.user_attrs.get(OVER_BUDGET)]
    assert all(t.state == TrialState.PRUNED and ARCH_INDEX not in t.params for t in skipped)
    _one_complete_trial_per_arch(trials)
    assert _evaluated(tmp_path) == sorted(ARCHS)


@pytest.mark.parametrize("error, seen_elsewhere", [(DivergenceError, DivergenceError), (RuntimeError, PipelineError)])
def test_a_proxy_error_propagates_and_is_not_retried(error, seen_elsewhere, ctx, url):
    with pytest.raises(error, match=r"^training .*: loss became nan at epoch 0; lower proxy.lr$"):
        score_distributed(_Failing(error=error), ARCHS, ctx, storage=url, study_name="stage", **FAST)
    failed = [t for t in _trials(url, "stage") if t.state == TrialState.FAIL]
    assert [t.params[ARCH_INDEX] for t in failed] == [2] and ERROR_ATTR in failed[0].user_attrs
    # any other process of the stage (here: a rerun) stops with one line naming the arch and the cause
    with pytest.raises(seen_elsewhere) as info:
        score_distributed(_Failing(error=error), ARCHS, ctx, storage=url, study_name="stage", **FAST)
    message = str(info.value)
    assert "\n" not in message and f"arch {ARCHS[2]} (#2) failed" in message and "lower proxy.lr" in message
    assert not [t for t in _trials(url, "stage") if t.system_attrs.get(RETRY_ATTR) is not None]


def _failing_worker(url: str, out, barrier) -> None:
    barrier.wait(timeout=30)
    try:
        score_distributed(_Failing(), ARCHS, make_ctx(make_data(n=20)), storage=url, study_name="stage", **FAST)
    except DivergenceError as exc:
        out.put(str(exc))
    else:
        out.put("no error")


def test_other_processes_stop_with_the_error_naming_the_arch(url, start):
    out, barrier = CTX.Queue(), CTX.Barrier(2)
    procs = [start(_failing_worker, url, out, barrier) for _ in range(2)]
    messages = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert messages[0].startswith(f"arch {ARCHS[2]} (#2) failed in a worker of study 'stage'")
    assert messages[1] == f"training {ARCHS[2]}: loss became nan at epoch 0; lower proxy.lr"
    # the other process stopped at its next arch instead of scoring all that were left
    assert len([t for t in _trials(url, "stage") if t.state == TrialState.WAITING]) > 0


def test_ctrl_c_puts_the_arch_in_flight_back(ctx, url, tmp_path):
    proxy = _Ords(log_dir=str(tmp_path), interrupt=ARCHS[2])
    with pytest.raises(KeyboardInterrupt):
        score_distributed(proxy, ARCHS, ctx, storage=url, study_name="stage", **FAST)
    waiting = [t for t in _trials(url, "stage") if t.state == TrialState.WAITING]
    assert ARCHS[2] in [t.user_attrs["arch"] for t in waiting]
    assert _plain(score_distributed(proxy, ARCHS, ctx, storage=url, study_name="stage", **FAST)) == _plain(
        score_all(_Ords(), ARCHS, ctx)
    )
    _one_complete_trial_per_arch(_trials(url, "stage"))
    assert _evaluated(tmp_path) == sorted(ARCHS + [ARCHS[2]])


def test_a_study_of_other_archs_or_never_filled_is_a_one_line_error(ctx, url):
    score_distributed(_Ords(), ARCHS[:3], ctx, storage=url, study_name="stage", **FAST)
    with pytest.raises(ConfigError, match="already holds other archs"):
        score_distributed(_Ords(), ARCHS[:4], ctx, storage=url, study_name="stage", **FAST)
    optuna.create_study(study_name="orphan", storage=url)  # as if its creator died before enqueueing
    with pytest.raises(ConfigError, match="nobody has enqueued more"):
        score_distributed(_Ords(), ARCHS, ctx, storage=url, study_name="orphan", enqueue_timeout=0.3, **FAST)
