"""Test accuracy of the standard evaluation ConvNet trained on each distiller's summary.

    python benchmarks/distill_accuracy.py                       # digits, CPU-sized settings
    python benchmarks/distill_accuracy.py --methods dc idc --ipc 10 --seeds 3 \\
        --set dc.iterations=1000 --set idc.iterations=2000
    python benchmarks/distill_accuracy.py --dataset cifar10 --root ../shared/data/cifar10/cifar10-jpeg.tar.gz \\
        --device cuda --paper-settings

For every registered distiller (or ``--methods``) and every seed: distil the
training split into ``--ipc`` images per class, train DC's evaluation network
(ConvNet-3: width 128, instance norm, ReLU, average pooling) on the summary
with DC's protocol (SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256,
the learning rate multiplied by ``--lr-decay`` half way, as in DC's released
``evaluate_synset``; DSA augmentation with one omega per image; on a summary's
learned labels, e.g. TESLA's, unless ``--hard-labels``), and report the
test accuracy (mean +- std over seeds), the distillation wall time and its peak
memory: ``torch.cuda.max_memory_allocated`` on a GPU; on a CPU the peak resident
set size of the process above its level before the distillation, sampled
every 5 ms from /proc (``tracemalloc`` would miss tensors, which torch allocates
outside Python's allocator).

Next to each method the published CIFAR-10 accuracies (ConvNet, IPC 1/10/50)
are printed for orientation; on digits they are not comparable numbers.
``idc``'s ``ipc`` counts decoded images, so the paper's IDC "IPC 10" (factor
2) is ``--ipc 40`` here.

Without ``--paper-settings``, iterative methods run with the small settings of
:data:`CPU_SETTINGS` (minutes on two CPU cores); ``--set name.key=value``
overrides any setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from proxynas.augment import DSA
from proxynas.data import CIFAR10, Digits, ImageFolder
from proxynas.data.types import ImageData
from proxynas.distill import DISTILLERS, Distiller
from proxynas.models import ConvNet
from proxynas.training import accuracy

# Published CIFAR-10 test accuracy (%) of ConvNet-3 trained on IPC 1 / 10 / 50 summaries.
# Values checked against the re-tabulations in Li et al. 2024 ("PAD", Tab. 1) and
# Yuan et al. NeurIPS 2024 ("AutoPalette", Tab. 1) where the original was not at hand.
PUBLISHED: dict[str, tuple[tuple[float, float, float] | None, str]] = {
    "random": ((14.4, 26.0, 43.4), "Zhao et al. ICLR 2021 (DC), Tab. 1"),
    "herding": ((21.5, 31.6, 40.4), "Zhao et al. ICLR 2021 (DC), Tab. 1"),
    "kcenter": ((23.3, 36.4, 48.7), "as tabulated by Yuan et al. NeurIPS 2024, Tab. 1"),
    "dc": ((28.3, 44.9, 53.9), "Zhao et al. ICLR 2021 (DC), Tab. 1"),
    "dsa": ((28.8, 52.1, 60.6), "Zhao & Bilen ICML 2021 (DSA), Tab. 1"),
    "dm": ((26.0, 48.9, 63.0), "Zhao & Bilen WACV 2023 (DM), Tab. 1"),
    "dcc": (None, "Lee et al. ICML 2022 (DCC/DSAC): not verified offline"),
    "idc": ((50.0, 67.5, 74.5), "Kim et al. ICML 2022 (IDC, factor 2; storage IPC)"),
    "mtt": ((46.3, 65.3, 71.6), "Cazenavette et al. CVPR 2022 (MTT), Tab. 1"),
    "kip": ((49.9, 62.7, 68.6), "Nguyen et al. NeurIPS 2021 (KIP, ConvNet)"),
    "frepo": ((46.8, 65.5, 71.7), "Zhou et al. NeurIPS 2022 (FRePO)"),
    "tesla": ((48.5, 66.4, 72.6), "Cui et al. ICML 2023 (TESLA)"),
}

# Small settings for a two-core CPU on 8x8 digits (the papers' are in each class's docstring).
# Depth 2 keeps a 2x2 feature map on 8x8 images: at depth 3 the last block normalises 2x2
# maps down to 1x1, and gradient matching on that network diverges (measured: DC's
# objective rises from ~700 to ~1500 within 15 image steps at lr_img 0.1).
CPU_SETTINGS: dict[str, dict] = {
    "dm": {"iterations": 200, "width": 64, "depth": 2},
    "dc": {"iterations": 40, "match_steps": 5, "net_epochs": 5, "width": 64, "depth": 2},
    "dcc": {"iterations": 40, "match_steps": 5, "net_epochs": 5, "width": 64, "depth": 2},
    "idc": {"iterations": 20, "match_steps": 10, "net_steps": 5, "width": 64, "depth": 2},
    # Trajectory matching: 5 experts x 15 epochs in batches of 64 (~21 SGD steps per epoch on the
    # 1,337 digits, vs MTT's 196 on CIFAR-10), 20 student steps matching 2 expert epochs.
    "mtt": {"iterations": 150, "syn_steps": 20, "expert_epochs": 2, "max_start_epoch": 10, "num_experts": 5,
            "expert_train_epochs": 15, "expert_batch": 64, "width": 64, "depth": 2},
    "tesla": {"iterations": 150, "syn_steps": 20, "expert_epochs": 2, "max_start_epoch": 10, "num_experts": 5,
              "expert_train_epochs": 15, "expert_batch": 64, "width": 64, "depth": 2},
}


@dataclass(frozen=True)
class EvalProtocol:
    """DC's evaluation training (released ``evaluate_synset``), with DSA augmentation."""

    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay: float = 0.1
    batch: int = 256
    dsa: str = "color_crop_cutout_flip_scale_rotate"


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or sampled RSS above the starting level on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: fall back to the (never reset) high-water mark
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._top = max(self._top, self._rss())

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._top = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._top, self._rss()) - self._base


def evaluate(
    summary: ImageData,
    test: ImageData,
    protocol: EvalProtocol,
    *,
    seed: int,
    device: torch.device,
    soft_labels: torch.Tensor | None = None,
    label_loss: str = "ce",
) -> float:
    """Train a fresh ConvNet-3 (width 128, instancenorm, relu, avgpool) on ``summary``; test accuracy in %.

    With ``soft_labels`` (a distiller's learned labels) the loss is the one
    ``proxynas.training.train_model`` uses: cross-entropy against their softmax
    (``label_loss="ce"``, logit labels) or MSE onto them (``"mse"``).
    """
    c, h, w = summary.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConvNet(c, summary.num_classes, (h, w), width=128, depth=3, act="relu", norm="instancenorm", pool="avgpool")
    net.to(device).train()
    x, y = summary.x.to(device), summary.y.to(device)
    soft = None if soft_labels is None else soft_labels.to(device, torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    augment = DSA(strategy=protocol.dsa, per_sample=True)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(protocol.epochs):
        if epoch == protocol.epochs // 2:
            for group in opt.param_groups:
                group["lr"] *= protocol.lr_decay
        for idx in torch.randperm(len(x), generator=gen).split(protocol.batch):
            idx = idx.to(device)
            xb = augment(x[idx], int(torch.randint(0, 2**31 - 1, (), generator=gen)))
            if soft_labels is None:
                loss = F.cross_entropy(net(xb), y[idx])
            elif label_loss == "mse":
                loss = F.mse_loss(net(xb), soft[idx])
            else:
                loss = F.cross_entropy(net(xb), soft[idx].softmax(dim=1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return accuracy(net, test, device=device)


def load(args) -> tuple[ImageData, ImageData, str]:
    """(train, test, description); validation is held out only minimally (1%) so train is nearly whole."""
    if args.dataset == "digits":
        splits = Digits(val_fraction=0.01).load()
    else:
        root = Path(args.root).expanduser()
        if (root / "cifar-10-batches-py").is_dir():
            splits = CIFAR10(root=str(root), val_fraction=0.01).load()
        else:
            splits = ImageFolder(root=str(root), val_fraction=0.01, workers=4).load()
    return splits.train, splits.test, f"{splits.name} train {len(splits.train)} / test {len(splits.test)}"


def parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, field = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set expects method.key=value, got {item!r}")
        out.setdefault(method, {})[field] = yaml.safe_load(value)
    return out


def build(name: str, args, overrides: dict[str, dict]) -> Distiller:
    settings = {} if args.paper_settings else dict(CPU_SETTINGS.get(name, {}))
    settings.update(overrides.get(name, {}))
    return DISTILLERS.get(name)(**settings)


def reference_rows(name: str, method: Distiller) -> list[tuple[str, tuple | None, str]]:
    key = name
    if name == "dc":  # the dc method is DSA unless its augmentation is off
        key = "dc" if getattr(method, "dsa", "none") == "none" else "dsa"
    if key not in PUBLISHED:
        return []
    values, source = PUBLISHED[key]
    return [(key, values, source)]


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:5.1f} ± {std:4.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=None, help="registered distiller names (default: all)")
    parser.add_argument("--dataset", choices=("digits", "cifar10"), default="digits")
    parser.add_argument("--root", default="../shared/data/cifar10/cifar10-jpeg.tar.gz",
                        help="CIFAR-10: a folder with cifar-10-batches-py, or an ImageFolder root / .tar.gz")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=None, help="evaluation epochs (default 300 on digits, 1000 otherwise)")
    parser.add_argument("--lr-decay", type=float, default=0.1, help="lr factor at half the epochs (DC code: 0.1)")
    parser.add_argument("--eval-dsa", default=EvalProtocol.dsa, help="DSA strategy when training the evaluation net")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--paper-settings", action="store_true", help="run distillers with their defaults, not CPU_SETTINGS")
    parser.add_argument("--equal-storage", action="store_true",
                        help="give multi-formation methods (idc) ipc*factor^2 decoded images, i.e. the storage of ipc images")
    parser.add_argument("--hard-labels", action="store_true",
                        help="train the evaluation net on the images' classes even when a summary carries learned labels")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="METHOD.KEY=VALUE")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.methods or DISTILLERS.names()
    overrides = parse_overrides(args.overrides)
    epochs = args.epochs or (300 if args.dataset == "digits" else 1000)
    protocol = EvalProtocol(epochs=epochs, lr_decay=args.lr_decay, dsa=args.eval_dsa)
    train, test, described = load(args)
    print(f"{described}; ipc {args.ipc}; seeds {args.seeds}; device {device}; eval {protocol}")

    rows = []
    for name in names:
        method = build(name, args, overrides)
        factor = getattr(method, "factor", 1)
        ipc = args.ipc * factor * factor if args.equal_storage else args.ipc
        accs, times, peaks = [], [], []
        for seed in range(args.seeds):
            with PeakMemory(device) as mem:
                start = time.perf_counter()
                summary = method.distill(train, ipc, seed=seed, device=device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            peaks.append(mem.peak_bytes / 2**20)
            soft = None if args.hard_labels else summary.soft_labels
            accs.append(evaluate(summary.data, test, protocol, seed=seed, device=device,
                                 soft_labels=soft, label_loss=summary.label_loss))
            print(f"  {name:8s} ipc {ipc:3d} seed {seed}: acc {accs[-1]:5.1f}%  distill {times[-1]:7.1f} s  peak {peaks[-1]:7.1f} MiB",
                  flush=True)
        rows.append((name, method, accs, times, peaks, ipc))

    mem_kind = "CUDA max allocated" if device.type == "cuda" else "peak RSS increase"
    print(f"\n{'method':8s} | {'ipc':>3s} | {'test acc (%)':13s} | {'distill (s)':11s} | {mem_kind + ' (MiB)':>26s} | "
          f"published CIFAR-10 IPC 1/10/50 [source]")
    print("-" * 126)
    for name, method, accs, times, peaks, ipc in rows:
        refs = reference_rows(name, method) or [("", None, "no published reference")]
        for i, (key, values, source) in enumerate(refs):
            pub = "/".join(f"{v:.1f}" for v in values) if values else "n/a"
            label = f"{key}: {pub}" if key and key != name else pub
            if i == 0:
                print(f"{name:8s} | {ipc:3d} | {fmt(accs):13s} | {statistics.fmean(times):11.1f} | {max(peaks):26.1f} | "
                      f"{label} [{source}]")
            else:
                print(f"{'':8s} | {'':3s} | {'':13s} | {'':11s} | {'':26s} | {label} [{source}]")
    others = [k for k in PUBLISHED if k not in {r[0] for r in rows} and k != "dsa"]
    if others:
        print("\nNot in this run (published CIFAR-10 IPC 1/10/50, for reference):")
        for key in others:
            values, source = PUBLISHED[key]
            pub = "/".join(f"{v:.1f}" for v in values) if values else "n/a"
            print(f"  {key:8s} {pub:16s} [{source}]")
    if any(r[0] == "idc" for r in rows):
        factor = getattr(next(r[1] for r in rows if r[0] == "idc"), "factor", 2)
        print(f"\nidc: ipc counts decoded images; it stores ceil(ipc/{factor**2}) images per class, "
              f"so the paper's IPC n (factor {factor}) is ipc {factor**2}*n here.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
