"""``arch_batch: auto``: the count that fits the device, measured on copies of the heaviest arch."""

import pytest
import torch

import proxynas.proxies.arch_batch as auto_batch
import proxynas.proxies.training as training
from proxynas.config.typed import from_dict
from proxynas.data import Digits
from proxynas.errors import ConfigError
from proxynas.evaluation import score_all
from proxynas.proxies import ProxyContext, TrainProxy
from proxynas.spaces import NB201Space

ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def linear_peaks(fixed: int, per_network: int, calls: list[int]):
    def peak(count: int) -> int:
        calls.append(count)
        return fixed + per_network * count

    return peak


def test_the_count_is_the_largest_whose_linear_peak_fits_the_budget():
    calls = []
    assert auto_batch.fitting_count(linear_peaks(1000, 100, calls), budget_bytes=1750, limit=50) == 7
    assert calls == [2, 4, 7]  # two probes for the model, one to confirm the prediction


def test_the_count_is_capped_by_the_archs_and_is_at_least_one():
    assert auto_batch.fitting_count(linear_peaks(1000, 100, []), budget_bytes=10**9, limit=12) == 12
    assert auto_batch.fitting_count(linear_peaks(1000, 100, []), budget_bytes=500, limit=12) == 1
    calls = []
    assert auto_batch.fitting_count(linear_peaks(1000, 100, calls), budget_bytes=500, limit=1) == 1
    assert calls == []  # one arch: nothing to measure


def test_a_prediction_whose_measured_peak_overshoots_is_lowered_in_proportion():
    def peak(count: int) -> int:  # linear up to 4 networks, then twice the memory per network
        return 1000 + 100 * count + (100 * (count - 4) if count > 4 else 0)

    count = auto_batch.fitting_count(peak, budget_bytes=2000, limit=100)
    assert count < 10 and peak(count) <= 2000 * 1.05
    assert count >= 5  # not thrown back to the probes' counts


def test_the_heaviest_arch_is_the_one_with_the_most_parameters():
    params = {"a": 5, "b": 9, "c": 1}
    assert auto_batch.heaviest(["a", "b", "c"], params.__getitem__) == "b"
    many = [f"x{i}" for i in range(1000)]
    built = []
    auto_batch.heaviest(many, lambda arch: built.append(arch) or int(arch[1:]))
    assert auto_batch.PROBE_CANDIDATES <= len(built) <= 2 * auto_batch.PROBE_CANDIDATES
    assert built[0] == "x0" and built[-1] > "x900"  # spread over the whole sample


@pytest.fixture(scope="module")
def ctx():
    data = Digits().load()
    small = data.train.subset(torch.arange(0, len(data.train), 6))
    return ProxyContext(NB201Space(channels=4, cells_per_stage=1), data, small, torch.device("cpu"), seed=0)


def test_auto_means_one_by_one_on_a_cpu(ctx):
    archs = ctx.space.sample(3, seed=0)
    fitted = TrainProxy(epochs=1, arch_batch="auto").fitted_to(archs, ctx)
    assert fitted.arch_batch == 1 and fitted.archs_per_scoring() == 1
    assert TrainProxy(arch_batch="auto").archs_per_scoring() == 1  # unresolved: one by one is always valid
    assert TrainProxy(arch_batch=4).fitted_to(archs, ctx).arch_batch == 4  # a number is kept


def test_auto_measures_fused_probes_of_the_heaviest_arch_and_groups_by_the_count(ctx, monkeypatch):
    """The device's measurements are faked (no GPU here); the probes really train fused on the CPU."""
    fused_sizes: list[int] = []
    probed: list[list[str]] = []
    real_fuse = NB201Space.fuse

    def recording_fuse(space, networks):
        fused_sizes.append(len(networks))
        return real_fuse(space, networks)

    real_score_batch = TrainProxy.score_batch

    def recording_score_batch(proxy, archs, ctx):
        probed.append(list(archs))
        return real_score_batch(proxy, archs, ctx)

    monkeypatch.setattr(NB201Space, "fuse", recording_fuse)
    monkeypatch.setattr(TrainProxy, "score_batch", recording_score_batch)
    monkeypatch.setattr(auto_batch, "measures_memory", lambda device: True)
    monkeypatch.setattr(auto_batch, "peak_bytes", lambda run, device, **_: run() and 0 or 1000 + 100 * fused_sizes[-1])
    monkeypatch.setattr(auto_batch, "free_bytes", lambda device: int(1350 / auto_batch.MEMORY_FRACTION) + 1)
    archs = [*ctx.space.sample(4, seed=3), ALL_CONV]
    proxy = TrainProxy(epochs=1, batch_size=64, arch_batch="auto")

    results = score_all(proxy, archs, ctx, workers=1)

    # the linear model's probes, the prediction (1350 - 1000) // 100 = 3 confirmed, then groups of 3
    assert fused_sizes == [2, 4, 3, 3, 2]
    assert probed[:3] == [[ALL_CONV] * 2, [ALL_CONV] * 4, [ALL_CONV] * 3]
    assert probed[3:] == [archs[:3], archs[3:]]
    fixed = score_all(TrainProxy(epochs=1, batch_size=64, arch_batch=3), archs, ctx, workers=1)
    assert [r["value"] for r in results] == [r["value"] for r in fixed]  # exactly what K=3 gives


def test_an_automatic_count_that_does_not_fit_names_auto_and_the_count(ctx, monkeypatch):
    monkeypatch.setattr(auto_batch, "measures_memory", lambda device: True)
    monkeypatch.setattr(TrainProxy, "_fitting_arch_batch", lambda self, archs, ctx: 2)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(training, "fit_fused", out_of_memory)
    with pytest.raises(
        ConfigError,
        match=r"^proxy.arch_batch=auto chose 2, but 2 of these networks trained at once do not fit in the memory"
        r" of cpu; set proxy.arch_batch below that$",
    ):
        score_all(TrainProxy(epochs=1, arch_batch="auto"), ctx.space.sample(3, seed=0), ctx, workers=1)


def test_auto_is_a_setting_and_other_words_are_one_line_errors():
    assert from_dict(TrainProxy, {"arch_batch": "auto"}, "proxy").arch_batch == "auto"
    for bad in ("many", 0, True):
        with pytest.raises(ConfigError, match="arch_batch"):
            from_dict(TrainProxy, {"arch_batch": bad}, "proxy")


def test_processes_sharing_a_gpu_each_fit_their_share_of_its_memory(ctx, monkeypatch):
    import dataclasses

    monkeypatch.setattr(auto_batch, "measures_memory", lambda device: True)
    monkeypatch.setattr(auto_batch, "peak_bytes", lambda run, device, **_: 1000 + 100 * calls[-1] if calls else 0)
    monkeypatch.setattr(auto_batch, "free_bytes", lambda device: int(3000 / auto_batch.MEMORY_FRACTION) + 1)
    calls: list[int] = []
    real = auto_batch.fitting_count

    def counting(peak, budget, limit):
        def recorded(count):
            calls.append(count)
            return peak(count)

        return real(recorded, budget, limit)

    monkeypatch.setattr(auto_batch, "fitting_count", counting)
    monkeypatch.setattr(TrainProxy, "score_batch", lambda self, archs, ctx: None)
    archs = ctx.space.sample(40, seed=0)
    alone = TrainProxy(epochs=1, arch_batch="auto").fitted_to(archs, ctx).arch_batch
    halved = TrainProxy(epochs=1, arch_batch="auto").fitted_to(archs, dataclasses.replace(ctx, memory_share=0.5))
    assert alone == (3000 - 1000) // 100  # 20 networks in the whole card's budget
    assert halved.arch_batch == (1500 - 1000) // 100  # 5 in half of it


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_the_probe_reads_the_held_memory_when_steps_are_cuda_graphs(ctx, monkeypatch, cuda_graphs):
    asked: list[bool] = []

    def peak(run, device, *, reserved=False):
        asked.append(reserved)
        return 1000

    monkeypatch.setattr(auto_batch, "measures_memory", lambda device: True)
    monkeypatch.setattr(auto_batch, "peak_bytes", peak)
    monkeypatch.setattr(auto_batch, "free_bytes", lambda device: 10**6)
    TrainProxy(epochs=1, arch_batch="auto", cuda_graphs=cuda_graphs).fitted_to(ctx.space.sample(8, seed=0), ctx)
    # a graph's private pool stays held after capture while its tensors count as freed
    assert asked and set(asked) == {cuda_graphs}


def test_an_out_of_memory_behind_another_error_still_names_arch_batch(ctx, monkeypatch):
    def capture_fails(*args, **kwargs):
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except torch.OutOfMemoryError:
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(training, "fit_fused", capture_fails)
    with pytest.raises(ConfigError, match=r"^proxy.arch_batch=2: 2 networks trained at once do not fit"):
        score_all(TrainProxy(epochs=1, arch_batch=2), ctx.space.sample(2, seed=0), ctx, workers=1)
    monkeypatch.setattr(training, "fit_fused", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bad kernel")))
    with pytest.raises(RuntimeError, match="bad kernel"):  # not an allocation failure: raised as it is
        score_all(TrainProxy(epochs=1, arch_batch=2), ctx.space.sample(2, seed=0), ctx, workers=1)
