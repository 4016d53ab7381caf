"""Score many architectures with one proxy, in worker processes on a multi-core CPU or sharing a GPU.

Training a small cell network on a CPU is bound by per-operator overhead, not
arithmetic, so a second thread barely helps while a second process doubles
throughput. On a CPU workers are forked (the dataset is shared copy-on-write,
never pickled) and run one thread each; every score depends only on the
proxy, the architecture and the seed, so the result does not depend on the
worker count. On CUDA one process runs by default (``default_workers``);
with ``workers`` > 1 the workers are spawned (CUDA does not survive a fork),
each with its own CUDA context on the same card, receiving the context once
(its tensors through shared memory): a small network's step leaves the card
waiting on the host, so several hosts' worth of launches can keep it busier.
A training proxy's ``arch_batch: auto`` then sizes its groups to 1/N of
the card's free memory (``ProxyContext.memory_share``).

A combining proxy (``proxy.combines``, e.g. AZ-NAS's rank aggregation) scores
each arch into named components; once all are in, ``proxy.combine`` turns
them into values, and each result keeps its arch's components under
``"components"``. A proxy with several named values (``proxy.value_names()``,
e.g. final accuracy and SoTL-E from one training) yields them all at once
(``proxy.score_values``): each result keeps them under ``"values"`` (its
``value`` is the first) and a training proxy's per-epoch ``"curve"``.

A proxy that trains several archs at once (``proxy.archs_per_scoring()`` > 1,
e.g. a training proxy's ``arch_batch``) gets the archs in consecutive groups
of that size (:func:`chunks`); a group is the unit a worker takes.
"""

from __future__ import annotations

import multiprocessing
import dataclasses
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

from proxynas.engine.journal import Journal
from proxynas.progress import Progress, null_progress
from proxynas.proxies.base import Proxy, ProxyContext, Scored

_WORKER: dict[str, Any] = {}


def default_workers(device: torch.device) -> int:
    """One process per core on a CPU (at most 8), one on a GPU."""
    return 1 if device.type != "cpu" else max(1, min(8, os.cpu_count() or 1))


def pool_start_method(device: torch.device) -> str:
    """How worker processes start: forked on a CPU (the data shared copy-on-write), spawned for CUDA."""
    return "spawn" if device.type == "cuda" else "fork"


def kernel_settings() -> dict[str, bool]:
    """This process's choices of CUDA kernels (``run.deterministic``, cuDNN autotuning), for its workers."""
    return {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def _init_worker(proxy: Proxy, ctx: ProxyContext, kernels: dict[str, bool] | None = None) -> None:
    torch.set_num_threads(1)
    if kernels is not None:  # a spawned process starts with torch's defaults, not its parent's
        torch.backends.cudnn.benchmark = kernels["cudnn_benchmark"]
        torch.backends.cudnn.deterministic = kernels["cudnn_deterministic"]
        torch.use_deterministic_algorithms(kernels["deterministic_algorithms"])
    _WORKER["proxy"], _WORKER["ctx"] = proxy, ctx


def _score(proxy: Proxy, ctx: ProxyContext, arch: str) -> tuple[Any, float]:
    """``(raw score, seconds)``: a float, a combining proxy's dict of component floats, or a :class:`Scored`."""
    start = time.perf_counter()
    if proxy.combines:
        raw = {str(k): float(v) for k, v in proxy.score(arch, ctx).items()}
    elif proxy.value_names():
        raw = _checked_values(proxy, proxy.score_values(arch, ctx))
    else:
        raw = float(proxy.score(arch, ctx))
    return raw, time.perf_counter() - start


def _score_chunk(proxy: Proxy, ctx: ProxyContext, archs: list[str]) -> list[tuple[Any, float]]:
    """:func:`_score` of each of ``archs``, trained at once when the proxy batches archs.

    A batch's time is shared equally among its archs.
    """
    if len(archs) == 1:
        return [_score(proxy, ctx, archs[0])]
    start = time.perf_counter()
    scored = proxy.score_batch(archs, ctx)
    if len(scored) != len(archs):
        raise RuntimeError(f"{type(proxy).__name__}.score_batch returned {len(scored)} results for {len(archs)} archs")
    seconds = (time.perf_counter() - start) / len(archs)
    return [(_checked_values(proxy, s), seconds) for s in scored]


def chunks(proxy: Proxy, archs: list[str]) -> list[list[str]]:
    """``archs`` in consecutive groups of ``proxy.archs_per_scoring()`` (the last may be smaller).

    The groups depend only on the arch list and the proxy, never on the
    worker count, so neither do the results.
    """
    size = 1 if proxy.combines or not proxy.value_names() else max(1, int(proxy.archs_per_scoring()))
    return [archs[i : i + size] for i in range(0, len(archs), size)]


def _checked_values(proxy: Proxy, scored: Scored) -> Scored:
    """``scored`` with float values in :meth:`Proxy.value_names` order (RuntimeError if a name is missing)."""
    names = proxy.value_names()
    missing = [n for n in names if n not in scored.values]
    if missing:
        raise RuntimeError(f"{type(proxy).__name__}.score_values gave no {missing[0]!r} (value_names: {names})")
    return Scored({n: float(scored.values[n]) for n in names}, tuple(dict(p) for p in scored.curve))


def encode_raw(raw: Any) -> Any:
    """A raw score (float, components dict or :class:`Scored`) as plain JSON-able data."""
    if isinstance(raw, Scored):
        return {"values": dict(raw.values), "curve": [{k: _plain(v) for k, v in p.items()} for p in raw.curve]}
    if isinstance(raw, dict):
        return {str(k): float(v) for k, v in raw.items()}
    return float(raw)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def decode_raw(proxy: Proxy, data: Any) -> Any:
    """:func:`encode_raw`'s inverse, as :func:`_score` returns it for ``proxy``."""
    if proxy.combines:
        return {str(k): float(v) for k, v in data.items()}
    if proxy.value_names():
        return Scored({k: float(v) for k, v in data["values"].items()}, tuple(dict(p) for p in data["curve"]))
    return float(data)


def _score_in_worker(archs: list[str]) -> list[tuple[Any, float]]:
    return _score_chunk(_WORKER["proxy"], _WORKER["ctx"], archs)


def _progress_info(proxy: Proxy, raw: Any) -> dict[str, float]:
    # a combining proxy's value is only known once the whole population is scored
    if proxy.combines:
        return {}
    return {"value": _first(raw) if isinstance(raw, Scored) else raw}


def _first(scored: Scored) -> float:
    return next(iter(scored.values.values()))


def _epochs(progress: Progress, index: int, total: int, count: int = 1) -> Progress:
    """The progress of the training of archs ``index + 1 .. index + count``, as part of the population's.

    Reported as ``arch`` (its number, or ``first-last`` for a batch trained
    at once) and ``epoch``. Only in-process scoring reports epochs: forked
    workers report each arch as it finishes.
    """
    label: int | str = index + 1 if count == 1 else f"{index + 1}-{index + count}"

    def report(done: int, epochs: int, **info: float) -> None:
        progress(index, total, arch=label, epoch=f"{done}/{epochs}", **info)

    return report


def _results(proxy: Proxy, archs: list[str], scored: list[tuple[Any, float]]) -> list[dict[str, Any]]:
    raw = [r for r, _ in scored]
    if not proxy.combines:
        return [_result(a, v, s) for a, (v, s) in zip(archs, scored)]
    values = [float(v) for v in proxy.combine(raw)]
    if len(values) != len(archs):
        raise RuntimeError(f"{type(proxy).__name__}.combine returned {len(values)} values for {len(archs)} archs")
    return [
        {"arch": a, "value": v, "seconds": s, "components": dict(r)}
        for a, v, (r, s) in zip(archs, values, scored)
    ]


def _result(arch: str, raw: Any, seconds: float) -> dict[str, Any]:
    if not isinstance(raw, Scored):
        return {"arch": arch, "value": raw, "seconds": seconds}
    out = {"arch": arch, "value": _first(raw), "seconds": seconds, "values": dict(raw.values)}
    if raw.curve:
        out["curve"] = [dict(p) for p in raw.curve]
    return out


def score_all(
    proxy: Proxy,
    archs: list[str],
    ctx: ProxyContext,
    *,
    workers: int = 1,
    progress: Progress = null_progress,
    journal: Journal | None = None,
) -> list[dict[str, Any]]:
    """``[{arch, value, seconds}]`` in the order of ``archs``.

    With a ``journal`` (:mod:`proxynas.engine.journal`) each arch's raw score
    is recorded as soon as it (or its fused group) is done, and archs already
    recorded there are not scored again: a rerun after a kill trains only
    the rest, with the same results (JSON keeps floats exactly).

    For a combining proxy the values come from ``proxy.combine`` over all of
    ``archs`` and every result also has ``components`` (its raw score dict).
    For a proxy with :meth:`~proxynas.proxies.base.Proxy.value_names` every
    result also has ``values`` (name -> float, ``value`` being the first) and,
    when it trains, ``curve`` (one mapping per epoch).
    """
    # a setting resolved on the device (arch_batch: auto) decides the groups below; processes
    # sharing one GPU share its memory
    sharing = workers > 1 and ctx.device.type == "cuda" and proxy.parallel and len(archs) > 1
    proxy = proxy.fitted_to(list(archs), dataclasses.replace(ctx, memory_share=1 / workers) if sharing else ctx)
    out: dict[str, tuple[Any, float]] = {}
    groups = []
    # the groups are cut from the whole list, so a resumed run trains the same groups
    for group in chunks(proxy, list(archs)):
        records = [journal.get(arch) for arch in group] if journal is not None else [None]
        if all(r is not None for r in records):
            for arch, record in zip(group, records):
                out[arch] = (decode_raw(proxy, record["raw"]), float(record["seconds"]))
        else:
            groups.append(group)
    if out:
        progress(len(out), len(archs), resumed=len(out))

    def record(arch: str, result: tuple[Any, float]) -> None:
        out[arch] = result
        if journal is not None:
            journal.put(arch, {"raw": encode_raw(result[0]), "seconds": result[1]})

    parallel = workers > 1 and len(groups) > 1 and proxy.parallel
    if not parallel:
        # On a CPU, one thread as in the workers: float reductions depend on the
        # thread count, and results must not depend on how many workers ran.
        previous = torch.get_num_threads()
        if ctx.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            for group in groups:
                first = len(out)
                in_group = dataclasses.replace(ctx, progress=_epochs(progress, first, len(archs), len(group)))
                for arch, result in zip(group, _score_chunk(proxy, in_group, group)):
                    record(arch, result)
                    progress(len(out), len(archs), **_progress_info(proxy, result[0]))
        finally:
            torch.set_num_threads(previous)
        return _results(proxy, archs, [out[a] for a in archs])
    processes = min(workers, len(groups))
    with ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context(pool_start_method(ctx.device)),
        initializer=_init_worker,
        # a spawned worker gets the context pickled: no progress callback (workers report per arch)
        initargs=(proxy, dataclasses.replace(ctx, progress=null_progress, memory_share=1 / processes),
                  kernel_settings()),
    ) as pool:
        futures = {pool.submit(_score_in_worker, group): group for group in groups}
        for future in as_completed(futures):
            for arch, result in zip(futures[future], future.result()):  # re-raises a worker's error here
                record(arch, result)
                progress(len(out), len(archs), **_progress_info(proxy, result[0]))
    return _results(proxy, archs, [out[a] for a in archs])
