"""Score many architectures with one proxy, in worker processes on a multi-core CPU.

Training a small cell network on a CPU is bound by per-operator overhead, not
arithmetic, so a second thread barely helps while a second process doubles
throughput. Workers are forked (the dataset is shared copy-on-write, never
pickled) and run one thread each; every score depends only on the proxy, the
architecture and the seed, so the result does not depend on the worker count.
On CUDA everything runs in-process (CUDA does not survive a fork).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

from proxynas.progress import Progress, null_progress
from proxynas.proxies.base import Proxy, ProxyContext

_WORKER: dict[str, Any] = {}


def default_workers(device: torch.device) -> int:
    """One process per core on a CPU (at most 8), one on a GPU."""
    return 1 if device.type != "cpu" else max(1, min(8, os.cpu_count() or 1))


def _init_worker(proxy: Proxy, ctx: ProxyContext) -> None:
    torch.set_num_threads(1)
    _WORKER["proxy"], _WORKER["ctx"] = proxy, ctx


def _score(proxy: Proxy, ctx: ProxyContext, arch: str) -> tuple[float, float]:
    start = time.perf_counter()
    value = float(proxy.score(arch, ctx))
    return value, time.perf_counter() - start


def _score_in_worker(arch: str) -> tuple[float, float]:
    return _score(_WORKER["proxy"], _WORKER["ctx"], arch)


def score_all(
    proxy: Proxy,
    archs: list[str],
    ctx: ProxyContext,
    *,
    workers: int = 1,
    progress: Progress = null_progress,
) -> list[dict[str, Any]]:
    """``[{arch, value, seconds}]`` in the order of ``archs``."""
    parallel = workers > 1 and len(archs) > 1 and ctx.device.type == "cpu" and proxy.parallel
    if not parallel:
        results = []
        for i, arch in enumerate(archs):
            value, seconds = _score(proxy, ctx, arch)
            results.append({"arch": arch, "value": value, "seconds": seconds})
            progress(i + 1, len(archs), value=value)
        return results
    out: dict[str, tuple[float, float]] = {}
    with ProcessPoolExecutor(
        max_workers=min(workers, len(archs)),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(proxy, ctx),
    ) as pool:
        futures = {pool.submit(_score_in_worker, arch): arch for arch in archs}
        for done, future in enumerate(as_completed(futures), 1):
            out[futures[future]] = future.result()  # re-raises a worker's error here
            progress(done, len(archs), value=out[futures[future]][0])
    return [{"arch": a, "value": out[a][0], "seconds": out[a][1]} for a in archs]
