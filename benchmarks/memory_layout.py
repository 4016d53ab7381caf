"""NCHW vs channels-last: single operators and whole training steps, side by side.

    python benchmarks/memory_layout.py              # 1 thread, as each run.workers process trains
    python benchmarks/memory_layout.py --threads 2

Whether a network trains faster channels-last (NHWC) depends on its layers
and the device, so each search space declares it
(``SearchSpace.trains_channels_last``) and one-by-one training follows the
declaration (:func:`proxynas.training.fit`). This script measures what the
declarations rest on:

1. operators of NB201's cells at its CPU shapes (batch 100: an ipc-10
   summary; C=8 at 16x16, 16 at 8x8, 32 at 4x4): a 3x3 convolution, NB201's
   3x3 average pool (``count_include_pad=False``) and BatchNorm, forward and
   backward, in each layout;
2. a training step (forward, backward, Nesterov SGD) of uniformly drawn
   networks of each space (seed 0) at the sizes pipelines train them, in
   each layout, each network built twice from the same seed.

Every figure is the median over ``--repeats`` rounds, the two layouts
alternating within a round, so that drift of the machine hits both alike;
the table's ratio is channels-last time over NCHW time (below 1: NHWC is
faster), and the last column says whether the space's declaration agrees.
On CUDA the steps run under bf16 autocast, as training does there.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from proxynas.device import resolve_device
from proxynas.spaces import SEARCH_SPACES

LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}
BATCH = 100


@dataclass(frozen=True)
class NetworkCase:
    """Networks of one space at one input size."""

    space: str
    settings: dict
    in_channels: int
    image_size: int
    archs: int
    steps: int

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.space}{f' ({shown})' if shown else ''}"


FULL = {
    "operators": [(8, 16), (16, 8), (32, 4)],
    "networks": [
        NetworkCase("nb201", {"channels": 8, "cells_per_stage": 1}, 3, 16, archs=8, steps=10),
        NetworkCase("nb201", {"channels": 16, "cells_per_stage": 5}, 3, 32, archs=2, steps=3),
        NetworkCase("convnet720", {}, 1, 8, archs=8, steps=10),  # the demo's digits
        NetworkCase("convnet720", {}, 3, 32, archs=4, steps=3),
    ],
    "repeats": 3,
}
QUICK = {
    "operators": [(4, 8)],
    "networks": [
        NetworkCase("nb201", {"channels": 4, "cells_per_stage": 1}, 3, 8, archs=2, steps=1),
        NetworkCase("convnet720", {}, 1, 8, archs=2, steps=1),
    ],
    "repeats": 1,
}


def mean_seconds(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Mean seconds of ``fn()`` over ``calls`` calls after one untimed call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / calls


def operator_rows(shapes, device: torch.device, repeats: int, calls: int = 20) -> list[tuple[str, str, float, float]]:
    """``(operator, shape, NCHW ms, channels-last ms)`` for NB201's cell operators, forward and backward."""
    rows = []
    for channels, size in shapes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(BATCH, channels, size, size, generator=gen).to(device)
        grad = torch.randn(BATCH, channels, size, size, generator=gen).to(device)
        weight = torch.randn(channels, channels, 3, 3, generator=gen).to(device)
        norm = torch.nn.BatchNorm2d(channels).to(device)
        ops = {
            "conv 3x3": lambda t, w: F.conv2d(t, w, padding=1),
            "avg pool 3x3 (NB201's)": lambda t, w: F.avg_pool2d(t, 3, 1, 1, count_include_pad=False),
            "BatchNorm (training)": lambda t, w: norm(t),
        }
        for name, op in ops.items():
            times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
            for _ in range(repeats):
                for layout, fmt in LAYOUTS.items():
                    t = x.contiguous(memory_format=fmt).requires_grad_()
                    w = weight.contiguous(memory_format=fmt).requires_grad_()
                    g = grad.contiguous(memory_format=fmt)
                    times[layout].append(mean_seconds(lambda: torch.autograd.grad(op(t, w), t, g), device, calls))
            shape = f"[{BATCH}, {channels}, {size}, {size}]"
            rows.append((name, shape, 1000 * statistics.median(times["NCHW"]),
                         1000 * statistics.median(times["channels-last"])))
    return rows


def step_seconds(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, steps: int) -> float:
    """Mean seconds of a training step: forward, cross-entropy, backward, Nesterov SGD."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return mean_seconds(step, device, steps)


def network_row(case: NetworkCase, device: torch.device, repeats: int) -> tuple[str, str, int, float, float, bool]:
    """``(space, input, archs, NCHW ms/step, channels-last ms/step, declared)``: means over the archs."""
    space = SEARCH_SPACES.get(case.space)(**case.settings)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, case.in_channels, case.image_size, case.image_size, generator=gen).to(device)
    y = (torch.arange(BATCH) % 10).to(device)
    totals: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    archs = space.sample(case.archs, seed=0)
    for _ in range(repeats):
        for layout, fmt in LAYOUTS.items():
            seconds = 0.0
            for arch in archs:
                torch.manual_seed(0)
                net = space.build(arch, in_channels=case.in_channels, num_classes=10, image_size=case.image_size)
                net = net.to(device).to(memory_format=fmt).train()
                seconds += step_seconds(net, x.contiguous(memory_format=fmt), y, device, case.steps)
            totals[layout].append(seconds / len(archs))
    return (case.label, f"{case.in_channels}x{case.image_size}x{case.image_size}", len(archs),
            1000 * statistics.median(totals["NCHW"]), 1000 * statistics.median(totals["channels-last"]),
            type(space).trains_channels_last)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: each run.workers process and the in-process path train on one)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per figure (default 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and networks, one round (a smoke test)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    repeats = args.repeats or plan["repeats"]
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"# memory layout: {where}, torch {torch.__version__}, batch {BATCH}, median of {repeats} round(s)",
          flush=True)

    print("\n| operator (forward + backward) | shape | NCHW ms | channels-last ms | ratio |\n|---|---|---|---|---|")
    for name, shape, nchw, nhwc in operator_rows(plan["operators"], device, repeats):
        print(f"| {name} | {shape} | {nchw:.3f} | {nhwc:.3f} | {nhwc / nchw:.2f} |", flush=True)

    print("\n| space | input | archs | NCHW ms/step | channels-last ms/step | ratio | declares channels-last |"
          " declaration agrees |\n|---|---|---|---|---|---|---|---|")
    for case in plan["networks"]:
        label, shape, archs, nchw, nhwc, declared = network_row(case, device, repeats)
        agrees = declared == (nhwc < nchw)
        print(f"| {label} | {shape} | {archs} | {nchw:.1f} | {nhwc:.1f} | {nhwc / nchw:.2f} | {declared} |"
              f" {'yes' if agrees else 'NO'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
