"""Architectures per minute of the training proxy: a naive loop, the per-arch path, worker processes, fused batches.

    python benchmarks/throughput.py --size cpu               # C=8 N=1, 16x16, ipc 10, 100 steps
    python benchmarks/throughput.py --size gpu --archs 1000  # C=16 N=5, 32x32, ipc 50, 200 epochs

Every variant trains the same uniformly drawn NB201 cells (``--seed``) on the
same summary (a seeded random ``ipc``-per-class subset of the training split)
with the same recipe (the CPU fidelity pipeline's: Nesterov SGD, cosine, DSA,
batch 256) and (b)-(f) score them on the same ``--eval-size`` validation images:

(a) ``naive``: written here, independently of proxynas's training code, the
    way DC-Bench scores a network (``evaluate_synset``; its NB201 search,
    ``darts-pt/nasbench201/train_search.py``): one arch at a time, a plain
    loop reading the loss (``loss.item()``) and the training accuracy on the
    host every step, torch's default thread count, then every network scored
    on the whole held-out split in batches of 64, each batch's hits read on
    the host (DC-Bench holds out 20% of CIFAR-10's training split, 10,000
    images, and so does this benchmark: ``val_fraction`` 0.2). (a') is the
    same run charged for scoring the ``--eval-size`` images (b)-(f) score
    instead (batches of 256), the stricter baseline: both are timed in the
    one run (training, each scoring, separately), and their ratios printed
    side by side;
(b) ``per-arch``: proxynas's path, ``score_all`` with one arch per training
    (``arch_batch: 1``), in-process;
(c) ``workers=N``: (b) in N worker processes (``run.workers``; what
    ``--jobs`` does for whole rows): forked on a CPU; on a GPU spawned,
    sharing the card, each with its own CUDA context (``--processes``; their
    memory is not in the peak column);
(d) ``fused K``: ``TrainProxy(arch_batch=K)``, K networks trained as one
    (:mod:`proxynas.models.fused`), in-process and, on a CPU, in N workers;
(e) ``CUDA graphs`` (GPU only): (a)'s algorithm with each training step
    captured once and replayed as one CUDA graph (:func:`graphed_scores`),
    to measure what launch overhead costs a small network;
(f) ``side by side K``: ``TrainProxy(arch_batch=K, batching="side_by_side")``,
    K whole networks trained at once, network k on CUDA stream k so that
    their kernels may overlap (on a CPU one after another, each as (b)
    trains it), in-process and, on a CPU, in N workers.

``--variants`` picks which run (``a,b,c,d,e,f``); ``--steps N`` replaces the
size's schedule with N training steps, for a quick first look at each
variant's step rate on a short lease; ``--contiguous`` trains (b)-(d) in
NCHW instead of channels-last (``proxy.channels_last: false``; by default
(b) and (c) train NB201 channels-last on any device, fused groups on CUDA
only, (a) and (e) always NCHW), ``--cudnn-benchmark`` lets
cuDNN time its algorithms per shape, ``--compile`` runs each fused group
through ``torch.compile`` (the suspects and the remedy to try when fusion is
slow on a GPU; the per-arch paths (a)-(c) are never compiled) and
``--cuda-graphs`` has (b)-(d) and (f) replay each training step as a CUDA graph
(``proxy.cuda_graphs``; on a CPU the same steps run eagerly);
``--profile`` prints each in-process variant's costliest operators
(torch.profiler; the device's self time on CUDA), to see where a step's
time goes. Each variant prints its line (with peak memory and GPU
utilisation) as soon as it is done and a fused run prints its progress, so
a run stopped by a timeout still reports what it finished.

It prints one table: seconds, archs/minute, the speed-up over (a) and (a'), peak
memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS) and, on
a GPU, the mean utilisation sampled from ``nvidia-smi`` while the variant
ran, and the variant's arithmetic rate: the FLOPs its archs need
(:func:`arch_flops_per_image`: convolutions and linear layers, counted once per arch)
over its wall time, against a large matmul's rate on the same device measured
in the same run (what the hardware reaches on dense arithmetic; NB201's
8-64-channel convolutions reach a fraction of it, and the memory-bound
BatchNorm, pooling and ReLU are not counted); the wall time all 15,625
NB201 cells would take at the fastest rate measured (an extrapolation, said
so); then (a), (b) and the largest-K (d)
side by side on every arch (final validation accuracy) with their pairwise
agreement: (a) and (b) run the same algorithm and differ only in float
rounding (thread count), which gives the noise floor (d) is held to.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxynas.augment import DSA  # noqa: E402
from proxynas.data.types import DatasetSplits, ImageData  # noqa: E402
from proxynas.device import resolve_device  # noqa: E402
from proxynas.evaluation import score_all  # noqa: E402
from proxynas.metrics.rank import spearman  # noqa: E402
from proxynas.proxies import ProxyContext, TrainProxy  # noqa: E402
from proxynas.proxies.training import stratified_subset  # noqa: E402
from proxynas.spaces import NB201Space  # noqa: E402
from workplace import WORKPLACE_CIFAR10  # noqa: E402

NB201_CELLS = 15_625
#: archs whose FLOPs are counted; a larger draw is charged their mean (the archs are uniformly drawn)
FLOP_COUNTED_ARCHS = 16


@dataclass(frozen=True)
class Size:
    channels: int
    cells: int
    image_size: int
    ipc: int
    epochs: int | None
    steps: int | None


SIZES = {
    "cpu": Size(channels=8, cells=1, image_size=16, ipc=10, epochs=None, steps=100),
    "gpu": Size(channels=16, cells=5, image_size=32, ipc=50, epochs=200, steps=None),
}


# -- (a): the naive loop, independent of proxynas.training ----------------------------
def schedule(proxy: TrainProxy, n: int) -> tuple[int, int, int]:
    """``(batch, steps per epoch, total steps)`` of training on ``n`` images with ``proxy``'s budget."""
    batch = min(proxy.batch_size, n)
    per_epoch = math.ceil(n / batch)
    return batch, per_epoch, proxy.steps if proxy.steps is not None else proxy.epochs * per_epoch


def batches(n: int, batch: int, total: int, seed: int, device: torch.device):
    """``(step, indices)`` of ``total`` steps: each epoch a fresh permutation (seeded), cut into batches."""
    gen = torch.Generator().manual_seed(seed)
    step = 0
    while step < total:
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch):
            if step == total:
                return
            yield step, order[start:start + batch]
            step += 1


@dataclass
class NaiveRun:
    """What (a) measured: each arch's accuracy on (b)'s images, and the seconds its two scorings took."""

    accs: list[float]
    whole_accs: list[float]
    scoring_seconds: float = 0.0  # (b)'s --eval-size images, batches of 256
    whole_seconds: float = 0.0  # the whole held-out split, batches of 64 (DC-Bench)


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def naive_scores(archs, space, data: DatasetSplits, train: ImageData, held_out: ImageData, proxy: TrainProxy,
                 device: torch.device, seed: int, whole: ImageData | None = None) -> NaiveRun:
    """Each arch trained one after another by a plain loop, then scored on ``held_out`` and, as DC-Bench
    scores a network, on the ``whole`` held-out split in batches of 64 (each scoring timed apart)."""
    dsa = DSA(per_sample=True)
    run = NaiveRun(accs=[], whole_accs=[])
    for arch in archs:
        torch.manual_seed(seed)
        net = space.build(arch, in_channels=data.shape[0], num_classes=data.num_classes,
                          image_size=data.shape[1]).to(device)
        net.train()
        n = len(train)
        batch, _, total = schedule(proxy, n)
        opt = torch.optim.SGD(net.parameters(), lr=proxy.lr, momentum=proxy.momentum,
                              weight_decay=proxy.weight_decay, nesterov=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        x_all, y_all = train.x.to(device), train.y.to(device)
        loss_avg, correct = 0.0, 0
        for step, idx in batches(n, batch, total, seed, device):
            img = dsa(x_all[idx], seed=seed * 1_000_003 + step)
            out = net(img)
            loss = F.cross_entropy(out, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_avg += loss.item() * len(idx)  # DC-Bench reads both on the host every step
            correct += int((out.argmax(1).cpu() == y_all[idx].cpu()).sum())
        begun = _clock(device)
        run.accs.append(held_out_accuracy(net, held_out, device, batch=256))
        scored = _clock(device)
        run.scoring_seconds += scored - begun
        if whole is not None:
            run.whole_accs.append(held_out_accuracy(net, whole, device, batch=64))
            run.whole_seconds += _clock(device) - scored
    return run


def held_out_accuracy(net: torch.nn.Module, held_out: ImageData, device: torch.device, batch: int) -> float:
    """Top-1 accuracy (%) of ``net`` in eval mode, batch by batch, each batch's hits read on the host."""
    net.eval()
    hits = 0
    with torch.no_grad():
        for start in range(0, len(held_out), batch):
            xb = held_out.x[start:start + batch].to(device)
            hits += int((net(xb).argmax(1).cpu() == held_out.y[start:start + batch]).sum())
    return 100.0 * hits / len(held_out)


# -- (e): the naive loop with each training step replayed as a CUDA graph -------------
def _sgd_step(params, grads, bufs, lr: torch.Tensor, momentum: float, weight_decay: float) -> None:
    """torch.optim.SGD's Nesterov update (dampening 0) with a device-tensor learning rate, so it can be captured."""
    torch._foreach_add_(grads, params, alpha=weight_decay)
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, grads)
    torch._foreach_add_(grads, bufs, alpha=momentum)
    torch._foreach_mul_(grads, lr)
    torch._foreach_sub_(params, grads)


def graphed_scores(archs, space, data: DatasetSplits, train: ImageData, held_out: ImageData, proxy: TrainProxy,
                   device: torch.device, seed: int) -> list[float]:
    """(a)'s algorithm, but each training step (forward, backward, SGD) is one CUDA graph replay.

    A small network's step is hundreds of kernel launches; a graph replays
    them with one. Augmentation (DSA, drawn per step) and the batch choice
    stay on the host side of the graph and are copied into the graph's static
    input; the cosine learning rate is a device tensor set before each
    replay. One graph per batch shape (a 500-image summary has batches of 256
    and 244). Capturing needs a few warm-up steps, after which the weights,
    BatchNorm statistics and momentum are restored, so training starts where
    (a)'s does. Float32, like (a).
    """
    dsa = DSA(per_sample=True)
    accs = []
    n = len(train)
    batch, per_epoch, total = schedule(proxy, n)
    x_all, y_all = train.x.to(device), train.y.to(device)
    for arch in archs:
        torch.manual_seed(seed)
        net = space.build(arch, in_channels=data.shape[0], num_classes=data.num_classes,
                          image_size=data.shape[1]).to(device)
        net.train()
        params = [p for p in net.parameters()]
        bufs = [torch.zeros_like(p) for p in params]
        lr = torch.tensor(float(proxy.lr), device=device)
        start_state = {k: v.clone() for k, v in net.state_dict().items()}
        graphs = {}
        for size in sorted({min(batch, n - i * batch) for i in range(per_epoch)}):
            static_x = x_all[:size].clone()
            static_y = y_all[:size].clone()

            def step():
                loss = F.cross_entropy(net(static_x), static_y)
                loss.backward()
                with torch.no_grad():
                    _sgd_step(params, [p.grad for p in params], bufs, lr, proxy.momentum, proxy.weight_decay)

            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up, as capturing requires (cuDNN plans, lazy state)
                    for param in params:
                        param.grad = None
                    step()
            torch.cuda.current_stream(device).wait_stream(side)
            for param in params:
                param.grad = None
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            graphs[size] = (graph, static_x, static_y)
        with torch.no_grad():  # undo the warm-up and capture steps
            for key, value in net.state_dict().items():
                value.copy_(start_state[key])
            for buf in bufs:
                buf.zero_()
        for step, idx in batches(n, batch, total, seed, device):
            graph, static_x, static_y = graphs[len(idx)]
            static_x.copy_(dsa(x_all[idx], seed=seed * 1_000_003 + step))
            static_y.copy_(y_all[idx])
            # CosineAnnealingLR's closed form, eta_min 0: the rate of this step
            lr.fill_(proxy.lr * (1 + math.cos(math.pi * step / total)) / 2)
            graph.replay()
        accs.append(held_out_accuracy(net, held_out, device, batch=256))
    return accs


# -- arithmetic -----------------------------------------------------------------------
def images_trained(n: int, batch: int, steps: int) -> int:
    """Images a training of ``steps`` steps over ``n`` images in batches of ``batch`` runs through the network."""
    per_epoch = math.ceil(n / batch)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * n + min(rest * batch, n)


def charged(per_image: tuple[float, float], trained: int, scored: int) -> float:
    """FLOPs of ``trained`` images trained and ``scored`` scored, from :func:`arch_flops_per_image`'s counts."""
    training, scoring = per_image
    return training * trained + scoring * scored


def arch_flops_per_image(space, arch: str, shape: tuple[int, int, int], num_classes: int) -> tuple[int, int]:
    """FLOPs of ``arch`` per image trained (forward and backward) and per image scored (forward).

    As ``torch.utils.flop_counter`` counts them: convolutions and linear layers
    (2 per multiply-add), in the network the proxy trains (``build_for_training``:
    live edges only; (a) also runs the dead ones, which this does not count).
    BatchNorm, pooling, ReLU, DSA and the SGD update are not counted: they move
    memory more than they compute. Counted on 2 images and scaled, since every
    counted operator is linear in the batch size.
    """
    net = space.build_for_training(arch, in_channels=shape[0], num_classes=num_classes, image_size=shape[1])
    x, y = torch.zeros(2, *shape), torch.zeros(2, dtype=torch.long)
    with FlopCounterMode(display=False) as training:
        F.cross_entropy(net(x), y).backward()
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as scoring:
        net(x)
    return training.get_total_flops() // 2, scoring.get_total_flops() // 2


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 1.0) -> float:
    """GFLOP/s of a large square matmul on ``device`` (torch's thread count on a CPU): the ceiling to read
    the variants' arithmetic rates against (small convolutions reach a fraction of it).

    The best of the matmuls (on CUDA, of batches of 10) timed in ``seconds``: a shared VM's rate moves
    from moment to moment (1 s averages on this project's 2-core VM ranged 85-176 GFLOP/s in one hour),
    and the ceiling is what the hardware reached, not its average.
    """
    size = 2048 if device.type == "cpu" else 8192
    batch = 1 if device.type == "cpu" else 10
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best, begun = 0.0, time.perf_counter()
    while time.perf_counter() - begun < seconds:
        start = time.perf_counter()
        for _ in range(batch):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * size**3 * batch / (time.perf_counter() - start) / 1e9)
    return best


# -- measuring ------------------------------------------------------------------------
class Ticker:
    """Progress of a long variant: one line per epoch milestone (about 10 per group), with elapsed seconds."""

    def __init__(self, start: float) -> None:
        self.start, self.next = start, 0

    def __call__(self, done: int, total: int, **info) -> None:
        # score_all reports epochs of the group in training as info["epoch"] == "done/epochs"
        epoch, _, epochs = str(info.get("epoch", "")).partition("/")
        if epoch.isdigit() and epochs.isdigit():
            epoch, epochs = int(epoch), int(epochs)
            if epoch >= self.next or epoch == epochs:
                print(f"    epoch {epoch}/{epochs} of a group; {done}/{total} archs done;"
                      f" {time.perf_counter() - self.start:.1f} s", flush=True)
                self.next = epoch + max(1, epochs // 10)
            if epoch == epochs:
                self.next = 0
        elif done:
            print(f"    {done}/{total} archs done; {time.perf_counter() - self.start:.1f} s", flush=True)


class GpuSampler:
    """Mean GPU utilisation (%) from ``nvidia-smi`` while the block runs (None off CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.enabled = device.type == "cuda"
        self.samples: list[float] = []

    def __enter__(self):
        if self.enabled:
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", str(torch.cuda.current_device())], capture_output=True, text=True,
                                     timeout=5)
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            self.stop.wait(0.2)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.stop.set()
            self.thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def profiled(device: torch.device, fn, rows: int = 15):
    """``fn()`` under torch.profiler; prints the operators taking the most self time (device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)
    return result


def _timed(device: torch.device, fn, profile: bool = False):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with GpuSampler(device) as gpu:
        start = time.perf_counter()
        result = profiled(device, fn) if profile else fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return result, seconds, _peak_memory_mb(device), gpu.mean


def _load(size: Size, data_root: str | None, seed: int) -> tuple[DatasetSplits, str]:
    root = data_root or (str(WORKPLACE_CIFAR10) if WORKPLACE_CIFAR10.is_file() else None)
    if root is None:
        from proxynas.data import Digits

        return Digits().load(), "sklearn digits (no CIFAR-10 found: pass --data-root)"
    from proxynas.data import DATASETS

    # DC-Bench's NB201 search holds out 20% of the training split (train_portion 0.8) and scores on all of it
    source = DATASETS.get("imagefolder")(root=root, image_size=size.image_size, val_fraction=0.2,
                                         workers=min(8, os.cpu_count() or 1))
    return source.load(), f"CIFAR-10 {size.image_size}x{size.image_size} ({root})"


def _summary(data: DatasetSplits, ipc: int, seed: int) -> ImageData:
    gen = torch.Generator().manual_seed(seed)
    picked = [torch.nonzero(data.train.y == k).flatten() for k in range(data.num_classes)]
    idx = torch.cat([m[torch.randperm(len(m), generator=gen)[:ipc]] for m in picked])
    return data.train.subset(idx.sort().values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--archs", type=int, default=16, help="uniformly drawn NB201 cells (default 16)")
    parser.add_argument("--naive-archs", type=int, default=None,
                        help="archs for (a) and (b), the slow loops (default: all); rates are per arch")
    parser.add_argument("--k", default="4,8,16",
                        help="comma list of arch_batch values for (d) and (f); 'auto' (d only) measures the count"
                             " that fits the device")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for (c) and (d) on a CPU")
    parser.add_argument("--steps", type=int, default=None, help="training steps instead of the size's schedule")
    parser.add_argument("--variants", default="a,b,c,d,e,f",
                        help="comma list of the variants to run (default all); the agreement tables need a, b and d")
    parser.add_argument("--processes", default="4,12",
                        help="comma list of process counts for (c) on a GPU (spawned, sharing the card)")
    parser.add_argument("--contiguous", action="store_true",
                        help="(b)-(d) train NCHW instead of channels-last (proxy.channels_last: false)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each fused group's training forward (proxy.compile: true)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="(b)-(d) and (f) replay each training step as a CUDA graph (proxy.cuda_graphs: true)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time its algorithms for each convolution shape (torch.backends.cudnn.benchmark)")
    parser.add_argument("--profile", action="store_true",
                        help="run each in-process variant under torch.profiler and print its costliest operators"
                             " (use with a short --steps; the profiler slows the timed run)")
    parser.add_argument("--eval-size", type=int, default=1000)
    parser.add_argument("--flop-archs", type=int, default=FLOP_COUNTED_ARCHS,
                        help=f"archs whose FLOPs are counted (0.2-0.4 s each, on the host); the others are charged"
                             f" their mean (default {FLOP_COUNTED_ARCHS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", help="CIFAR-10 ImageFolder folder or .tar.gz (default: the workplace copy)")
    args = parser.parse_args(argv)

    variants = set(args.variants.split(","))
    if not variants <= {"a", "b", "c", "d", "e", "f"}:  # before the data is loaded
        parser.error(f"--variants takes a comma list of a, b, c, d, e, f; got {args.variants!r}")
    size = SIZES[args.size]
    if args.steps:
        size = replace(size, steps=args.steps, epochs=None)
    device = resolve_device(args.device)
    data, described = _load(size, args.data_root, args.seed)
    train = _summary(data, size.ipc, args.seed)
    held_out = stratified_subset(data.val, args.eval_size, args.seed)
    space = NB201Space(channels=size.channels, cells_per_stage=size.cells)
    archs = space.sample(args.archs, seed=args.seed)
    slow = archs[: args.naive_archs or len(archs)]
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    proxy = TrainProxy(batch_size=256, lr=0.05, augment="dsa", eval_size=args.eval_size,
                       channels_last=not args.contiguous, compile=args.compile, cuda_graphs=args.cuda_graphs,
                       **({"steps": size.steps} if size.steps else {"epochs": size.epochs}))
    ctx = ProxyContext(space=space, dataset=replace(data, val=held_out), train_data=train, device=device,
                       seed=args.seed)
    cpu = device.type == "cpu"
    threads = torch.get_num_threads()
    layout = ("(a)-(d) NCHW" if args.contiguous else
              f"(a) NCHW, (b)-(c) channels-last, fused {'NCHW' if cpu else 'channels-last'}")
    print(f"# throughput: {device} ({torch.cuda.get_device_name(device) if not cpu else f'{threads} CPU threads'}),"
          f" NB201 C={size.channels} N={size.cells}, {described}, ipc {size.ipc} ({len(train)} images),"
          f" {f'{size.steps} steps' if size.steps else f'{size.epochs} epochs'} of batch 256 with DSA,"
          f" scored on {len(held_out)} val images ((a): all {len(data.val)}, batch 64); {len(archs)} archs"
          f" (seed {args.seed}),"
          f" {len(slow)} for the one-at-a-time loops; {layout},"
          f" cudnn.benchmark {args.cudnn_benchmark}, compiled {args.compile},"
          f" (b)-(d), (f) CUDA graphs {args.cuda_graphs}", flush=True)

    # the arithmetic each arch needs, counted on the first archs (counting takes 0.2-0.4 s an arch, on the host)
    batch, _, steps = schedule(proxy, len(train))
    trained = images_trained(len(train), batch, steps)
    per_image = {arch: arch_flops_per_image(space, arch, data.shape, data.num_classes)
                 for arch in archs[:max(1, args.flop_archs)]}
    mean_per_image = tuple(statistics.fmean(counts) for counts in zip(*per_image.values()))

    def flops(arch: str, scored: int) -> float:
        return charged(per_image.get(arch, mean_per_image), trained, scored)

    mean_flops = statistics.fmean(flops(arch, len(held_out)) for arch in per_image)
    peaks = {"fp32": matmul_peak(device)}
    if not cpu:
        peaks["bf16"] = matmul_peak(device, torch.bfloat16)
    print(f"# arithmetic: {mean_flops / 1e9:.1f} GFLOP per arch (convolutions and linear layers of the live-edge"
          f" network: {trained:,} images trained, {len(held_out):,} scored; mean of {len(per_image)} archs"
          + ("" if len(per_image) == len(archs) else f", the first {len(per_image)} of {len(archs)}") + ");"
          f" matmul peak {', '.join(f'{k} {v:,.0f}' for k, v in peaks.items())} GFLOP/s", flush=True)

    def peak_of(name: str) -> float:
        # proxynas trains under bf16 autocast on CUDA; (a) and (e) are float32 loops
        return peaks["fp32"] if cpu or name.startswith(("(a", "(e)")) else peaks["bf16"]

    rows = []

    def record(name: str, archs_run: list[str], seconds: float, memory: float, util: float | None,
               scored: int) -> None:
        rate = 60 * len(archs_run) / seconds
        gflops = sum(flops(arch, scored) for arch in archs_run) / seconds / 1e9
        rows.append((name, len(archs_run), seconds, rate, memory, util, gflops))
        # everything the table holds, so a run stopped later still reports this variant whole
        print(f"  {name:<22} {len(archs_run):>5} archs {seconds:8.1f} s {rate:8.1f} archs/min"
              f"  peak {memory:.0f} MiB" + (f"  GPU util {util:.0f}%" if util is not None else "")
              + f"  {gflops:.1f} GFLOP/s ({100 * gflops / peak_of(name):.0f}% of matmul peak)", flush=True)

    def measure(name: str, archs_run: list[str], fn) -> list[float]:
        result, seconds, memory, util = _timed(device, fn, profile=args.profile and not name.startswith("(c)"))
        record(name, archs_run, seconds, memory, util, len(held_out))
        return result

    naive = per_arch = None
    if "a" in variants:
        run, seconds, memory, util = _timed(
            device, lambda: naive_scores(slow, space, data, train, held_out, proxy, device, args.seed, whole=data.val),
            profile=args.profile)
        naive = run.accs
        # one run, two charges: DC-Bench's scoring (the issue's baseline) and (b)'s (the stricter one)
        record("(a) naive loop", slow, seconds - run.scoring_seconds, memory, util, len(data.val))
        record("(a') naive, (b)'s scoring", slow, seconds - run.whole_seconds, memory, util, len(held_out))

    def accs(results):
        return [r["values"]["val_acc"] for r in results]

    graphed = None
    if "e" in variants and cpu:
        print("  (e) CUDA graphs: skipped, it needs a CUDA device", flush=True)
    elif "e" in variants:
        graphed = measure("(e) naive, CUDA graphs", slow,
                          lambda: graphed_scores(slow, space, data, train, held_out, proxy, device, args.seed))
    if "b" in variants:
        per_arch = accs(measure("(b) per-arch", slow, lambda: score_all(proxy, slow, ctx, workers=1)))
    if cpu and "c" in variants:
        measure(f"(c) workers={args.workers}", archs, lambda: score_all(proxy, archs, ctx, workers=args.workers))
    elif "c" in variants:
        # what the spawned workers need: the summary and the validation images, not the splits
        slim = replace(ctx, dataset=replace(ctx.dataset, train=train, test=held_out))
        for count in [int(v) for v in args.processes.split(",")]:
            measure(f"(c) workers={count}, spawned", archs,
                    lambda: score_all(proxy, archs, slim, workers=count))
    fused: dict[int | str, list[float]] = {}
    for k in [v if v == "auto" else int(v) for v in args.k.split(",")] if "d" in variants else []:
        batched = replace(proxy, arch_batch=k)
        chosen: list[int] = []

        begun = time.perf_counter()

        def fused_run():
            # auto's memory probe is timed with the run it sizes
            fitted = batched.fitted_to(archs, ctx)
            chosen.append(fitted.arch_batch)
            print(f"    K={k}: training {len(archs)} archs in groups of {fitted.arch_batch}"
                  f" ({time.perf_counter() - begun:.1f} s after the start)", flush=True)
            return score_all(fitted, archs, ctx, workers=1, progress=Ticker(time.perf_counter()))

        fused[k] = accs(measure(f"(d) fused K={k}", archs, fused_run))
        if k == "auto":
            rows[-1] = (f"(d) fused K=auto (chose {chosen[0]})", *rows[-1][1:])
        if cpu:
            measure(f"(d) fused K={k} workers={args.workers}", archs,
                    lambda: score_all(batched, archs, ctx, workers=args.workers))

    side: dict[int, list[float]] = {}
    for k in [int(v) for v in args.k.split(",") if v != "auto"] if "f" in variants else []:
        together = replace(proxy, arch_batch=k, batching="side_by_side")
        side[k] = accs(measure(f"(f) side by side K={k}", archs,
                               lambda: score_all(together, archs, ctx, workers=1, progress=Ticker(time.perf_counter()))))
        if cpu:
            measure(f"(f) side by side K={k} workers={args.workers}", archs,
                    lambda: score_all(together, archs, ctx, workers=args.workers))

    if not rows:
        return 0
    base, strict = (rows[0][3], rows[1][3]) if naive is not None else (None, None)
    print(f"\n| variant ({device.type.upper()}) | archs | seconds | archs/min | vs (a) | vs (a') | peak memory MiB |"
          + (" GPU util % |" if not cpu else "") + " GFLOP/s | % of matmul peak |")
    print("|---|---|---|---|---|---|---|" + ("---|" if not cpu else "") + "---|---|")
    for name, n, seconds, rate, memory, util, gflops in rows:
        ratios = " | ".join(f"{rate / ref:.2f}x" if ref else "n/a" for ref in (base, strict))
        line = f"| {name} | {n} | {seconds:.1f} | {rate:.1f} | {ratios} | {memory:.0f} |"
        line += f" {util:.0f} |" if not cpu and util is not None else " n/a |" if not cpu else ""
        print(line + f" {gflops:.1f} | {100 * gflops / peak_of(name):.0f} |")
    precision = "fp32" if cpu else "(a), (e) fp32, the others bf16 (autocast)"
    print(f"(GFLOP/s: the counted arithmetic above over the variant's wall time; peak: a {precision} square matmul"
          f" on this {device.type.upper()}, measured in this run)")
    if naive is not None:
        print(f"((a) and (a') are one run of the naive loop: training, then scoring on all {len(data.val):,} held-out"
              f" images in batches of 64 as DC-Bench does ({run.whole_seconds:.1f} s in all), or on the"
              f" {len(held_out):,} the others score, in batches of 256 ({run.scoring_seconds:.1f} s); each row is"
              " charged its own scoring)")
    best_name, _, _, best_rate, *_ = max(rows, key=lambda r: r[3])
    print(f"\nall {NB201_CELLS:,} NB201 cells at the fastest rate measured ({best_name}, {best_rate:.1f} archs/min):"
          f" {NB201_CELLS / best_rate / 60:.1f} h (extrapolated, not measured)")

    if naive is not None and graphed is not None:
        diffs = [abs(a - e) for a, e in zip(naive, graphed)]
        print(f"\n(a) naive vs (e) CUDA graphs, the same algorithm on {len(slow)} archs: mean abs diff"
              f" {statistics.fmean(diffs):.2f}, max {max(diffs):.2f} points (float rounding)")
    if per_arch is not None and side:
        k_side = max(side)
        diffs = [abs(b - f) for b, f in zip(per_arch, side[k_side])]
        print(f"\n(b) per-arch vs (f) side by side K={k_side} on {len(per_arch)} archs: mean abs diff"
              f" {statistics.fmean(diffs):.2f}, max {max(diffs):.2f} points (0 on a CPU: the same kernels)")
    if naive is None or per_arch is None or not fused:
        return 0
    k_best = max(fused, key=lambda k: float("inf") if k == "auto" else k)
    fused_slow = fused[k_best][: len(slow)]
    print(f"\nagreement on the same {len(slow)} archs (final val accuracy %); (a) vs (b) differ only in float"
          " rounding (torch's thread count), which training amplifies: the noise floor of any two runs")
    print("| pair | mean abs diff | max abs diff | Spearman |\n|---|---|---|---|")
    for name, first, second in (("(a) naive vs (b) per-arch", naive, per_arch),
                                (f"(b) per-arch vs (d) fused K={k_best}", per_arch, fused_slow),
                                (f"(a) naive vs (d) fused K={k_best}", naive, fused_slow)):
        diffs = [abs(a - b) for a, b in zip(first, second)]
        rho = spearman(first, second) if len(first) >= 3 else float("nan")
        print(f"| {name} | {statistics.fmean(diffs):.2f} | {max(diffs):.2f} | {rho:+.3f} |")
    spread = statistics.pstdev(per_arch) if len(per_arch) > 1 else float("nan")
    print(f"(spread of the archs' accuracies, (b): std {spread:.2f} points)")
    print("\n| arch | (a) naive | (b) per-arch | (d) fused |\n|---|---|---|---|")
    for arch, a, b, d in zip(slow, naive, per_arch, fused_slow):
        print(f"| `{arch}` | {a:.1f} | {b:.1f} | {d:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
