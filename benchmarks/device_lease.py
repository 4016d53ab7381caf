"""Everything the open issues measure on a lent GPU, in one call, each part under its own deadline.

    python benchmarks/device_lease.py --data-root .devdata/cifar10-jpeg.tar.gz --budget 540 --out "$OUT"

A lease is short (15 minutes of device time per issue, start-up included) and
the device machine keeps nothing, so the parts run in the order they matter,
each in its own process with a timeout taken from what is left of
``--budget``; a part that fails or runs out of time costs only itself. Each
part's full output is written to ``--out/<part>.log``; the tables are printed
again at the end (the tool returns only the tail of the output).

1. ``env``: the card (``nvidia-smi -L``), torch and CUDA versions.
   ``graphs`` (issue 13): ``tests/test_step_graphs.py`` and
   ``tests/models/test_parallel.py`` on the card (their CUDA tests capture
   real graphs: graphed training agrees with eager training, one graph per
   batch shape, a NaN still stops it; networks on CUDA streams, with and
   without graphs, train as alone), then
   ``throughput.py --size gpu --steps 100 --cuda-graphs``: (a) beside
   (b) and (f) (K networks side by side on K CUDA streams, one graph with K
   parallel branches) with every training step replayed as a CUDA graph
   (``proxy.cuda_graphs``), then (c) and (d) so.
2. ``throughput_quick`` (issue 13): ``throughput.py --size gpu --steps 20``
   on a few archs, every variant -- (a), (b), (c) processes sharing the
   card, (d) fused at two K, (e) the naive loop as CUDA graphs, (f) side
   by side at two K -- then (d) again in NCHW and with
   ``cudnn.benchmark``, and (b) and (d) under torch.profiler: each
   variant's step rate, and where a step's device time goes, in about a
   minute each; (b) runs NCHW too (one-by-one NB201 training is
   channels-last since this lease's table).
   ``layout`` (issue 13): ``memory_layout.py`` on the card -- NCHW vs
   channels-last for NB201's operators and each space's training steps.
3. ``throughput`` (issue 13): ``benchmarks/throughput.py --size gpu`` -- the
   naive loop (a), the per-arch path (b) and fused training at ``K=auto`` (d)
   on the same uniformly drawn NB201 cells in this one call
   (``--throughput-args`` replaces the arguments after ``--size gpu``).
4. ``distill_probe`` (issue 15): DM, DC, IDC and MTT with their CIFAR-10 IPC 10
   paper presets cut to a few iterations (MTT: one expert of a few epochs),
   distillation only, progress printed with elapsed seconds: what one
   iteration (and one expert epoch) of each costs on this card.
5. ``dm``: DM at its paper preset and evaluation protocol for as many of its
   20,000 iterations as the rest of the budget holds (all of them: a row
   comparable with the paper; fewer: said so by the table's ``--set``), or
   ``--dm-iterations``.

The 2026-11-28 lease (H200) ran ``env,throughput,distill_probe,dm``: the
fused run did not finish in its part (README, Throughput), and DM ran 3,955
iterations at 0.024 s each. What a next lease should run, one issue each:

    # issue 13: CUDA-graph steps (tests, then rates beside the naive loop), every variant's step rate (~9 min)
    python benchmarks/device_lease.py --data-root D --budget 540 --parts env,graphs,throughput_quick,layout
    # issue 15: DM's whole paper run, 20,000 iterations (~8 min) and its evaluation
    python benchmarks/device_lease.py --data-root D --budget 560 --parts env,dm --dm-iterations 20000
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

DM_PAPER_ITERATIONS = 20_000
DM_PROBE_ITERATIONS = 200
#: data loading, the 1000-epoch evaluation and the test pass of the DM run
DM_FIXED_SECONDS = 75.0


def run_part(name: str, cmd: list[str], timeout: float, out: Path) -> tuple[str, float, int | None]:
    """Run ``cmd`` (its output to the terminal and ``out/name.log``); (output, seconds, return code or None on timeout)."""
    print(f"\n=== {name}: {' '.join(cmd)} (timeout {timeout:.0f} s)", flush=True)
    log = out / f"{name}.log"
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    lines: list[str] = []
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        deadline = start + timeout
        code: int | None = None
        try:
            import selectors

            selector = selectors.DefaultSelector()
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError
                if selector.select(timeout=min(left, 1.0)):
                    line = proc.stdout.readline()
                    if not line:
                        break
                    lines.append(line)
                    sink.write(line)
                    sink.flush()
                    print(line, end="", flush=True)
            code = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except (TimeoutError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            note = f"[{name}: stopped at its {timeout:.0f} s timeout]\n"
            lines.append(note)
            sink.write(note)
            print(note, end="", flush=True)
    seconds = time.perf_counter() - start
    print(f"=== {name}: {'exit ' + str(code) if code is not None else 'timed out'} after {seconds:.1f} s", flush=True)
    return "".join(lines), seconds, code


def tables(text: str) -> str:
    """The markdown table rows and the lines just before/after them (what the end summary repeats)."""
    keep = [line for line in text.splitlines()
            if line.startswith(("|", "#", "all ", "agreement", "(spread", "  ", "    ", "[", "Traceback", "(a)", "(b)",
                                "FAILED", "SKIPPED"))
            or "Error" in line or re.search(r"\d+ (passed|failed)", line)]
    return "\n".join(keep[-60:])


def seconds_per_iteration(probe: str, method: str) -> float | None:
    """From the probe's progress lines: seconds per iteration of ``method``'s last phase."""
    points = [(int(m.group(1)), int(m.group(2)), float(m.group(3)))
              for m in re.finditer(rf"^\s+{method} (\d+)/(\d+) after ([\d.]+) s", probe, flags=re.M)]
    if not points:
        return None
    total = points[-1][1]
    phase = [(done, t) for done, tot, t in points if tot == total]
    (d0, t0), (d1, t1) = phase[0], phase[-1]
    return (t1 - t0) / (d1 - d0) if d1 > d0 else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="CIFAR-10 ImageFolder folder or .tar.gz")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all parts together")
    parser.add_argument("--out", default=os.environ.get("OUT", "device_out"))
    parser.add_argument("--archs", type=int, default=64, help="NB201 cells of the throughput table")
    parser.add_argument("--naive-archs", type=int, default=8)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parts", default="env,throughput,distill_probe,dm")
    parser.add_argument("--throughput-size", default="gpu")
    parser.add_argument("--throughput-args", default=None,
                        help="arguments of the throughput part after --size (default: --archs/--naive-archs, K=auto)")
    parser.add_argument("--dm-iterations", type=int, default=None,
                        help="DM's iterations in the dm part (default: what the budget holds, at most 20,000)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    start = time.perf_counter()

    def left() -> float:
        return args.budget - (time.perf_counter() - start)

    py = sys.executable
    results: dict[str, str] = {}
    if "env" in parts:
        cmd = [py, "-c", "import torch, subprocess; print('torch', torch.__version__, 'cuda', torch.version.cuda,"
                         " 'cudnn', torch.backends.cudnn.version());"
                         " print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA');"
                         " subprocess.run(['nvidia-smi', '-L'])"]
        results["env"] = run_part("env", cmd, min(60, left()), out)[0]
    # FLOPs counted on 4 archs (a few seconds on the host instead of ~6 per invocation)
    throughput = [py, str(HERE / "throughput.py"), "--size", args.throughput_size, "--data-root", args.data_root,
                  "--device", args.device, "--flop-archs", "4"]
    if "graphs" in parts:
        cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_step_graphs.py"),
               str(ROOT / "tests" / "models" / "test_parallel.py")]
        results["graphs_test"] = run_part("graphs_test", cmd, min(90, left()), out)[0]
        # 100 steps: each arch's captures (2 batch shapes, 3 warm-up steps each) weigh as they would in 400
        graphed = [*throughput, "--steps", "100", "--archs", "24", "--naive-archs", "2", "--cuda-graphs"]
        for name, extra, share in (("throughput_graphs", ["--variants", "a,b,f", "--k", "8,24"], 0.3),
                                   ("throughput_graphs_more", ["--variants", "c,d", "--k", "24", "--processes", "4"],
                                    0.15)):
            results[name] = run_part(name, [*graphed, *extra], min(share * args.budget, left()), out)[0]
    if "throughput_quick" in parts:
        quick = [*throughput, "--steps", "20", "--archs", "24", "--naive-archs", "4"]
        every = ["--variants", "a,b,c,d,e,f", "--k", "8,24", "--processes", "4,12"]
        for name, extra in (("throughput_quick", every),
                            ("throughput_nchw", ["--variants", "b,d", "--k", "8,24", "--contiguous"]),
                            ("throughput_cudnn", ["--variants", "d", "--k", "8,24", "--cudnn-benchmark"]),
                            ("throughput_profile", ["--variants", "b,d", "--k", "24", "--profile"])):
            results[name] = run_part(name, [*quick, *extra], min(0.12 * args.budget, left()), out)[0]
    if "layout" in parts:
        cmd = [py, str(HERE / "memory_layout.py"), "--device", args.device]
        results["layout"] = run_part("layout", cmd, min(60, left()), out)[0]
    if "throughput" in parts:
        extra = (args.throughput_args.split() if args.throughput_args else
                 ["--archs", str(args.archs), "--naive-archs", str(args.naive_archs), "--k", "auto",
                  "--variants", "a,b,d"])
        results["throughput"] = run_part("throughput", [*throughput, *extra], min(0.45 * args.budget, left()),
                                         out)[0]
    common = [py, str(HERE / "distill_accuracy.py"), "--dataset", "cifar10", "--root", args.data_root,
              "--paper-settings", "--ipc", "10", "--seeds", "1", "--device", args.device, "--progress", "5"]
    dm_rate = None
    if "distill_probe" in parts:
        cmd = [*common, "--methods", "dm", "dc", "idc", "mtt", "--skip-eval"]
        for setting in (f"dm.iterations={DM_PROBE_ITERATIONS}", "dc.iterations=3", "dc.log_every=1",
                        "idc.iterations=3", "idc.log_every=1", "mtt.iterations=20", "mtt.log_every=1",
                        "mtt.num_experts=1", "mtt.expert_train_epochs=3", "mtt.max_start_epoch=1"):
            cmd += ["--set", setting]
        text = results["distill_probe"] = run_part("distill_probe", cmd, min(150, left()), out)[0]
        dm_rate = seconds_per_iteration(text, "dm")
        rates = {m: seconds_per_iteration(text, m) for m in ("dm", "dc", "idc", "mtt")}
        results["distill_probe"] += "\n" + "\n".join(
            f"  {m}: {r:.4f} s per iteration (last phase, from progress)" for m, r in rates.items() if r)
    if "dm" in parts:
        room = left() - DM_FIXED_SECONDS
        iterations = args.dm_iterations or (
            DM_PAPER_ITERATIONS if dm_rate is None else int(min(DM_PAPER_ITERATIONS, room / dm_rate)))
        if iterations >= 100:
            cmd = [*common, "--methods", "dm"]
            if iterations < DM_PAPER_ITERATIONS:
                cmd += ["--set", f"dm.iterations={iterations}"]
            results["dm"] = run_part("dm", cmd, max(1.0, left() - 5), out)[0]
        else:
            results["dm"] = f"dm skipped: {room:.0f} s left for iterations at {dm_rate} s each"

    print(f"\n##### summary ({time.perf_counter() - start:.0f} s of {args.budget:.0f})")
    for name, text in results.items():
        print(f"\n## {name}\n{tables(text) if name != 'env' else text.strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
