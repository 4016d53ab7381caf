"""Training steps of NB201 networks built by ``build`` and by ``build_for_training`` (live edges only), side by side.

    python benchmarks/live_edges.py             # 1 CPU thread, as each run.workers process trains
    python benchmarks/live_edges.py --device cuda

``SearchSpace.build_for_training`` lets a space skip computation that cannot
change a network's logits; NB201's cells then skip ``none`` edges and edges
into nodes the output does not use (``NB201Cell.forward_live_edges``), and the
training proxy builds its networks so. This script measures what that saves:
for uniformly drawn cells (seed 0) at the sizes pipelines train them, the
median time of a training step (forward, cross-entropy, backward, Nesterov
SGD; channels-last, as the proxy trains NB201) over ``--repeats`` rounds,
the two builds alternating within a round so that drift of the machine hits
both alike. The table's ratio is the sum over the archs of the
live-edge networks' times over the built ones' (below 1: faster), and its
last column says whether the two trained to bit-equal logits, which the
contract suite requires.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_layout import mean_seconds  # noqa: E402
from proxynas.device import resolve_device  # noqa: E402
from proxynas.spaces import NB201Space  # noqa: E402

BATCH = 100


@dataclass(frozen=True)
class Case:
    channels: int
    cells: int
    image_size: int
    archs: int
    steps: int


FULL = [Case(8, 1, 16, archs=16, steps=4), Case(16, 5, 32, archs=4, steps=2)]
QUICK = [Case(4, 1, 8, archs=3, steps=1)]


def _stepper(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    net.to(device).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True)
    logits: list[torch.Tensor] = []

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        logits[:] = [out.detach()]

    return step, logits


def case_row(case: Case, device: torch.device, repeats: int) -> tuple[str, int, float, float, bool]:
    """``(label, archs, built ms/step, live-edge ms/step, bit-equal)``: means over the archs."""
    space = NB201Space(channels=case.channels, cells_per_stage=case.cells)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, case.image_size, case.image_size, generator=gen).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,), generator=gen).to(device)
    built_total = live_total = 0.0
    equal = True
    sizes = {"in_channels": 3, "num_classes": 10, "image_size": case.image_size}
    for arch in space.sample(case.archs, seed=0):
        steppers = []
        for build in (space.build, space.build_for_training):
            torch.manual_seed(0)
            steppers.append(_stepper(build(arch, **sizes), x, y, device))
        times: list[list[float]] = [[], []]
        for _ in range(repeats):
            for (step, _), store in zip(steppers, times):
                store.append(mean_seconds(step, device, case.steps))
        built_total += statistics.median(times[0])
        live_total += statistics.median(times[1])
        # both made the same number of steps from the same weights: their last logits must agree exactly
        equal = equal and torch.equal(steppers[0][1][0], steppers[1][1][0])
    label = f"nb201 C={case.channels} N={case.cells}, 3x{case.image_size}x{case.image_size}"
    return label, case.archs, 1000 * built_total / case.archs, 1000 * live_total / case.archs, equal


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, as each worker trains)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one tiny case, one round (for tests)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    cases, repeats = (QUICK, 1) if args.quick else (FULL, args.repeats)
    where = f"{args.threads} CPU thread(s)" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"# live edges: {device} ({where}), torch {torch.__version__}, batch {BATCH}, channels-last,"
          f" median of {repeats} round(s)\n")
    print("| networks | archs | build ms/step | build_for_training ms/step | ratio | bit-equal logits |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        label, archs, built, live, equal = case_row(case, device, repeats)
        print(f"| {label} | {archs} | {built:.1f} | {live:.1f} | {live / built:.2f} | {'yes' if equal else 'NO'} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
