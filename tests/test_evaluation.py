import dataclasses
from dataclasses import dataclass

import pytest
import torch

from proxynas.data import Digits
from proxynas.errors import DivergenceError
from proxynas.evaluation import default_workers, score_all
from proxynas.proxies import ParamsProxy, Proxy, ProxyContext, TrainProxy
from proxynas.spaces import NB201Space


@pytest.fixture(scope="module")
def ctx():
    data = Digits().load()
    small = data.train.subset(torch.arange(0, len(data.train), 6))
    return ProxyContext(NB201Space(channels=4, cells_per_stage=1), data, small, torch.device("cpu"), seed=0)


def test_workers_give_the_same_scores_in_the_same_order(ctx):
    archs = ctx.space.sample(4, seed=1)
    proxy = TrainProxy(epochs=2, batch_size=64)
    serial = score_all(proxy, archs, ctx, workers=1)
    calls = []
    parallel = score_all(proxy, archs, ctx, workers=2, progress=lambda d, t, **i: calls.append(d))
    assert [r["arch"] for r in parallel] == archs
    assert [r["value"] for r in parallel] == [r["value"] for r in serial]  # exactly: results must not depend on workers
    assert all(r["seconds"] > 0 for r in parallel)
    assert calls == [1, 2, 3, 4]


def test_in_process_training_reports_every_epoch_of_every_arch(ctx):
    archs = ctx.space.sample(2, seed=1)
    calls = []
    score_all(TrainProxy(epochs=3, batch_size=64), archs, ctx, workers=1,
              progress=lambda done, total, **info: calls.append((done, total, info)))
    epochs = [(d, info["arch"], info["epoch"]) for d, _, info in calls if "epoch" in info]
    assert epochs == [(0, 1, "1/3"), (0, 1, "2/3"), (0, 1, "3/3"), (1, 2, "1/3"), (1, 2, "2/3"), (1, 2, "3/3")]
    assert all("loss" in info for _, _, info in calls if "epoch" in info)
    assert [(d, t) for d, t, info in calls if "epoch" not in info] == [(1, 2), (2, 2)]


@dataclass(frozen=True)
class _Exploding(Proxy):
    parallel = True

    def score(self, arch, ctx):
        raise DivergenceError(f"training {arch}: loss became nan at epoch 0; lower proxy.lr")


def test_a_worker_error_reaches_the_caller_unchanged(ctx):
    with pytest.raises(DivergenceError, match="lower proxy.lr"):
        score_all(_Exploding(), ctx.space.sample(3, seed=0), ctx, workers=2)


def test_cheap_proxies_stay_in_process(ctx, monkeypatch):
    import proxynas.evaluation as ev

    monkeypatch.setattr(ev, "ProcessPoolExecutor", None)  # would fail if used
    archs = ctx.space.sample(3, seed=0)
    assert len(score_all(ParamsProxy(), archs, ctx, workers=4)) == 3


@pytest.mark.parametrize("cores, expected", [(None, 1), (1, 1), (2, 2), (8, 8), (64, 8)])
def test_default_workers_one_per_core_up_to_8_on_cpu_and_one_on_gpu(monkeypatch, cores, expected):
    import proxynas.evaluation as ev

    monkeypatch.setattr(ev.os, "cpu_count", lambda: cores)
    assert default_workers(torch.device("cpu")) == expected
    assert default_workers(torch.device("cuda")) == 1


def test_a_proxy_with_several_values_gives_them_all_and_its_curves_whatever_the_workers(ctx):
    archs = ctx.space.sample(3, seed=2)
    proxy = TrainProxy(epochs=2, batch_size=64, scores=("sotl_2", "val_acc"))
    serial = score_all(proxy, archs, ctx, workers=1)
    parallel = score_all(proxy, archs, ctx, workers=2)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in parallel] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in serial
    ]
    for r in serial:
        assert list(r["values"]) == ["sotl_2", "val_acc"] and r["value"] == r["values"]["sotl_2"] < 0
        assert [p["epoch"] for p in r["curve"]] == [1, 2] and r["curve"][-1]["val_acc"] == r["values"]["val_acc"]
    assert "values" not in score_all(ParamsProxy(), archs, ctx)[0]  # a one-value proxy: as before


def test_in_process_scoring_uses_one_cpu_thread_and_restores_the_count(ctx):
    seen = []

    @dataclass(frozen=True)
    class _Threads(Proxy):
        def score(self, arch, ctx):
            seen.append(torch.get_num_threads())
            return 0.0

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        score_all(_Threads(), ctx.space.sample(2, seed=0), ctx, workers=1)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_archs_trained_fused_give_the_same_results_whatever_the_workers(ctx):
    archs = ctx.space.sample(5, seed=2)
    proxy = TrainProxy(epochs=2, batch_size=64, arch_batch=2, scores=("val_acc", "sotl_1"))
    calls = []
    serial = score_all(proxy, archs, ctx, workers=1)
    parallel = score_all(proxy, archs, ctx, workers=2, progress=lambda d, t, **i: calls.append(d))
    assert [r["arch"] for r in parallel] == archs
    assert [r["values"] for r in parallel] == [r["values"] for r in serial]  # exactly: groups do not depend on workers
    assert sorted(calls) == [1, 2, 3, 4, 5]
    alone = score_all(TrainProxy(epochs=2, batch_size=64, scores=("val_acc", "sotl_1")), archs, ctx, workers=2)
    for fused, single in zip(serial, alone):
        assert fused["values"]["val_acc"] == pytest.approx(single["values"]["val_acc"], abs=1.0)
        assert fused["values"]["sotl_1"] == pytest.approx(single["values"]["sotl_1"], abs=1e-3)
        assert len(fused["curve"]) == 2


def test_an_arch_batch_larger_than_the_population_trains_them_all_at_once(ctx, monkeypatch):
    import proxynas.proxies.training as training

    sizes = []
    real = training.fit_fused
    monkeypatch.setattr(training, "fit_fused", lambda fused, *a, **k: sizes.append(len(k["labels"])) or real(fused, *a, **k))
    archs = ctx.space.sample(3, seed=0)
    results = score_all(TrainProxy(epochs=1, batch_size=64, arch_batch=16), archs, ctx, workers=2)
    assert sizes == [3] and [r["arch"] for r in results] == archs


def test_a_diverging_arch_in_a_fused_batch_stops_the_run_naming_it(ctx):
    archs = [ctx.space.sample(1, seed=0)[0], "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"]
    proxy = TrainProxy(epochs=3, batch_size=64, lr=1e30, arch_batch=2)
    with pytest.raises(DivergenceError, match=r"^training \|.*: loss became (nan|inf) at epoch \d; lower proxy.lr \(now 1e\+30\)$"):
        score_all(proxy, archs, ctx, workers=1)


def test_an_arch_batch_too_large_for_memory_is_one_line_naming_the_setting(ctx, monkeypatch):
    import proxynas.proxies.training as training
    from proxynas.errors import ConfigError

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(training, "fit_fused", out_of_memory)
    with pytest.raises(ConfigError, match=r"^proxy.arch_batch=8: 3 networks trained at once do not fit in the memory of cpu; lower proxy.arch_batch$"):
        score_all(TrainProxy(epochs=1, arch_batch=8), ctx.space.sample(3, seed=0), ctx, workers=1)


@dataclass(frozen=True)
class _Interrupted(Proxy):
    """Trains like TrainProxy but dies (as a kill would) when it reaches ``stop_at``."""

    parallel = True
    stop_at: str = ""

    def score(self, arch, ctx):
        return self.score_values(arch, ctx).values["val_acc"]

    def value_names(self):
        return ("val_acc", "sotl_1")

    def score_values(self, arch, ctx):
        if arch == self.stop_at:
            raise KeyboardInterrupt
        return TrainProxy(epochs=2, batch_size=64, scores=("val_acc", "sotl_1")).score_values(arch, ctx)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_journal_resumes_an_interrupted_scoring_with_the_uninterrupted_results(ctx, tmp_path, workers):
    from proxynas.engine import Journal

    archs = ctx.space.sample(5, seed=3)
    whole = score_all(_Interrupted(), archs, ctx, workers=1)
    journal = Journal(tmp_path / "journal")
    with pytest.raises(KeyboardInterrupt):
        score_all(_Interrupted(stop_at=archs[3]), archs, ctx, workers=1, journal=journal)
    assert len(journal) == 3
    calls = []
    resumed = score_all(_Interrupted(), archs, ctx, workers=workers, journal=journal,
                        progress=lambda d, t, **i: "epoch" in i or calls.append((d, i.get("resumed"))))
    assert calls[0] == (3, 3) and [d for d, _ in calls[1:]] in ([4, 5], [5, 4])  # only two archs scored
    assert [(r["arch"], r["values"], r["curve"]) for r in resumed] == [
        (r["arch"], r["values"], r["curve"]) for r in whole
    ]


def test_a_journal_records_fused_groups_whole(ctx, tmp_path):
    from proxynas.engine import Journal

    archs = ctx.space.sample(5, seed=3)
    proxy = TrainProxy(epochs=1, batch_size=64, arch_batch=2)
    journal = Journal(tmp_path / "journal")
    first = score_all(proxy, archs, ctx, journal=journal)
    assert len(journal) == 5
    for arch in archs[2:]:  # as if killed after the first group
        (journal.folder / f"{__import__('hashlib').sha256(arch.encode()).hexdigest()}.json").unlink()
    again = score_all(proxy, archs, ctx, journal=journal)
    assert [r["values"] for r in again] == [r["values"] for r in first]


def test_spawned_workers_as_on_a_gpu_give_the_same_scores(ctx, monkeypatch):
    # CUDA workers are spawned, so the proxy and the context (its tensors, its progress) must
    # pickle; spawning on the CPU here runs that path without a GPU
    import proxynas.evaluation as evaluation

    assert evaluation.pool_start_method(torch.device("cuda")) == "spawn"
    assert evaluation.pool_start_method(torch.device("cpu")) == "fork"
    archs = ctx.space.sample(3, seed=2)
    proxy = TrainProxy(epochs=1, batch_size=64)
    serial = score_all(proxy, archs, ctx, workers=1)
    monkeypatch.setattr(evaluation, "pool_start_method", lambda device: "spawn")
    with_closure = dataclasses.replace(ctx, progress=lambda *a, **k: None)  # a closure does not pickle
    spawned = score_all(proxy, archs, with_closure, workers=2)
    assert [r["value"] for r in spawned] == [r["value"] for r in serial]


class _KernelFlags(Proxy):
    """Reports the worker's kernel choices: cuDNN deterministic + 2 x deterministic algorithms."""

    parallel = True

    def score(self, arch, ctx):
        return float(torch.backends.cudnn.deterministic) + 2 * float(torch.are_deterministic_algorithms_enabled())


def test_spawned_workers_use_the_kernel_choices_of_the_run(ctx, monkeypatch):
    # run.deterministic is set in the parent process; a spawned worker must not fall back to the defaults
    import proxynas.evaluation as evaluation

    monkeypatch.setattr(evaluation, "pool_start_method", lambda device: "spawn")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        scores = score_all(_KernelFlags(), ctx.space.sample(2, seed=0), ctx, workers=2)
    finally:
        torch.use_deterministic_algorithms(before)
    assert [r["value"] for r in scores] == [3.0, 3.0]
