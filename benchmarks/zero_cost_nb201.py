"""Rank preservation of the zero-cost proxies on NAS-Bench-201 / CIFAR-10.

Samples ``--archs`` NB201 cells, scores each with every zero-cost proxy (and
the ``params`` baseline) on a minibatch of real CIFAR-10 training images, and
compares each proxy's ranking with the benchmark's 200-epoch CIFAR-10 test
accuracy (``cifar10_test_200ep`` of the NB201 table shipped with proxynas): Spearman rho,
Kendall tau, seconds per architecture, and the Spearman rho published for the
same proxy over all 15,625 architectures.

Only a few hundred training images are decoded from the shared JPEG tarball
(``tarfile`` + Pillow), normalised with NAS-Bench-201's CIFAR mean/std. The
reference table is read with ``gzip`` + ``csv`` directly.

    PYTHONPATH=. .venv/bin/python benchmarks/zero_cost_nb201.py --archs 100 --channels 8 --cells 1

``az_nas`` (AZ-NAS, Lee & Ham, CVPR 2024) ranks a population: its four
components are scored per arch, then ``combine`` aggregates their ranks over
the sampled archs, as ``proxynas run`` does; each component's own correlation
is printed below it (``az_nas:expressivity`` ...).

``--channels 16 --cells 5`` is the benchmark's own network; smaller values
score a narrower/shallower network of the same cell (much faster on a CPU),
which is a further approximation on top of the proxy itself.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import random
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxynas.data.types import DatasetSplits, ImageData  # noqa: E402
from proxynas.device import resolve_device  # noqa: E402
from proxynas.metrics.rank import kendall, spearman  # noqa: E402
from proxynas.proxies import PROXIES, ZERO_COST_PROXIES, ProxyContext  # noqa: E402
from proxynas.reference import default_table_path  # noqa: E402
from proxynas.spaces import NB201Space, is_connected  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# NAS-Bench-201's CIFAR normalisation (Dong & Yang's code: mean 125.3/123.0/113.9, std 63.0/62.1/66.7 of 255)
MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))

#: Published Spearman rho on NAS-Bench-201 CIFAR-10 (all 15,625 archs) and where it was read.
#: A21 = Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021; the three-decimal
#: values are the output of the authors' notebook that produces their Table
#: (github.com/SamsungLabs/zero-cost-nas, notebooks/nasbench201_correlations.ipynb, cell
#: "Table 1: Spearman rho of zero-cost proxies on NAS-Bench-201", CIFAR10 row; note it reports |rho|).
PUBLISHED = {
    "synflow": ("0.737", "A21 notebook (paper: 0.74)"),
    "jacob_cov": ("0.731", "A21 notebook (paper: 0.73)"),
    "snip": ("0.596", "A21 notebook (paper: 0.58)"),
    "grad_norm": ("0.594", "A21 notebook (paper: 0.58)"),
    "fisher": ("0.360", "A21 notebook (paper: 0.36)"),
    # second-hand: a public wiki summary of the NB201 tables of EZNAS (Akhauri et al., NeurIPS 2022),
    # not checked against the paper itself
    "flops": ("0.75", "EZNAS NB201 table via a summary (unverified)"),
    "naswot": ("tau 0.57", "Kendall tau; EZNAS via a summary (unverified)"),
    "params": ("0.753", "all 15,625 archs, params_MB column of the shared table"),
    # Lee & Ham, "AZ-NAS", CVPR 2024: Spearman 0.913 / Kendall 0.741 over all archs (C=16, N=5, Gaussian
    # inputs), as printed by the authors' notebook (cvlab-yonsei/AZ-NAS, NB201/tss_general.ipynb)
    "az_nas": ("0.913", "Lee & Ham CVPR 2024 (Kendall tau 0.741)"),
}


def default_data_dir() -> Path:
    return ROOT.parent / "shared" / "data"


def load_cifar_images(path: Path, n: int, seed: int) -> ImageData:
    """``n`` training images (balanced over classes, seeded choice) decoded from the JPEG tarball."""
    from PIL import Image

    per_class = max(1, n // len(CLASSES))
    with tarfile.open(path, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("train/")]
        by_class: dict[str, list[tarfile.TarInfo]] = {c: [] for c in CLASSES}
        for m in members:
            parts = m.name.split("/")
            if len(parts) == 3 and parts[1] in by_class:
                by_class[parts[1]].append(m)
        rng = random.Random(seed)
        chosen: list[tuple[tarfile.TarInfo, int]] = []
        for k, c in enumerate(CLASSES):
            pool = sorted(by_class[c], key=lambda m: m.name)
            if len(pool) < per_class:
                raise SystemExit(f"{path}: class {c!r} has {len(pool)} training images, need {per_class}")
            chosen += [(m, k) for m in rng.sample(pool, per_class)]
        chosen.sort(key=lambda mk: mk[0].offset_data)  # read forward through the gzip stream
        images, labels = [], []
        for member, label in chosen:
            data = tar.extractfile(member).read()
            img = Image.open(io.BytesIO(data)).convert("RGB")
            images.append(np.asarray(img, dtype=np.float32) / 255.0)
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    return ImageData(x, torch.tensor(labels, dtype=torch.int64), CLASSES, MEAN, STD)


def load_reference(path: Path, column: str) -> dict[str, float]:
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise SystemExit(f"{path}: no column {column!r}; columns: {', '.join(reader.fieldnames or [])}")
        return {row["arch_str"]: float(row[column]) for row in reader}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", type=int, default=200, help="number of sampled NB201 architectures")
    p.add_argument("--seed", type=int, default=0, help="seed of arch sampling, image choice, batch and init")
    p.add_argument("--batch", type=int, default=64, help="minibatch size of the data-dependent proxies")
    p.add_argument("--channels", type=int, default=16, help="NB201 C (16 = the benchmark's network)")
    p.add_argument("--cells", type=int, default=5, help="NB201 N, cells per stage (5 = the benchmark's)")
    p.add_argument("--images", type=int, default=320, help="training images to decode (>= --batch)")
    p.add_argument("--data", type=Path, default=default_data_dir() / "cifar10" / "cifar10-jpeg.tar.gz")
    p.add_argument("--results", type=Path, default=default_table_path(),
                   help="NB201 results table (default: the one shipped with proxynas)")
    p.add_argument("--reference", default="cifar10_test_200ep", help="column of the results table")
    p.add_argument("--proxies", default=",".join(ZERO_COST_PROXIES + ("params",)), help="comma-separated")
    p.add_argument("--az-inputs", choices=("gaussian", "data"), default="gaussian",
                   help="az_nas minibatch: Gaussian noise (the authors' protocol) or the CIFAR-10 batch")
    p.add_argument("--connected-only", action="store_true", help="skip cells whose output ignores the input")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--out", type=Path, help="write per-arch scores to this CSV")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    for n in names:
        PROXIES.get(n)  # fail early on a typo

    t0 = time.perf_counter()
    train = load_cifar_images(args.data, max(args.images, args.batch), args.seed)
    reference = load_reference(args.results, args.reference)
    print(f"decoded {len(train)} CIFAR-10 training images and {len(reference)} reference rows"
          f" in {time.perf_counter() - t0:.1f}s", flush=True)

    space = NB201Space(channels=args.channels, cells_per_stage=args.cells, skip_disconnected=args.connected_only)
    archs = space.sample(args.archs, seed=args.seed)
    missing = [a for a in archs if a not in reference]
    if missing:
        raise SystemExit(f"{len(missing)} sampled archs are not in {args.results}, e.g. {missing[0]}")
    ref = [reference[a] for a in archs]
    dataset = DatasetSplits("cifar10-sample", train, train, train)
    ctx = ProxyContext(space=space, dataset=dataset, train_data=train, device=device, seed=args.seed)

    scores: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    components: dict[str, list[str]] = {}  # combining proxy -> its component rows
    for name in names:
        cls = PROXIES.get(name)
        fields = getattr(cls, "__dataclass_fields__", {})
        settings = {"batch_size": args.batch} if "batch_size" in fields else {}
        if "inputs" in fields:
            settings["inputs"] = args.az_inputs
        proxy = cls(**settings)
        start = time.perf_counter()
        raw = []
        for i, arch in enumerate(archs):
            raw.append(proxy.score(arch, ctx))
            if (i + 1) % 25 == 0:
                print(f"  {name}: {i + 1}/{len(archs)} ({time.perf_counter() - start:.0f}s)", flush=True)
        values = [float(v) for v in proxy.combine(raw)]  # a population step for combining proxies, else as is
        seconds[name] = (time.perf_counter() - start) / len(archs)
        scores[name] = values
        print(f"{name}: done, {seconds[name]:.3f} s/arch, spearman {spearman(values, ref):+.3f}", flush=True)
        if proxy.combines:
            for component in raw[0]:
                key = f"{name}:{component}"
                scores[key] = [float(r[component]) for r in raw]
                seconds[key] = float("nan")
                components.setdefault(name, []).append(key)

    n_conn = sum(is_connected(a) for a in archs)
    print()
    print(f"NAS-Bench-201 CIFAR-10: {len(archs)} archs ({n_conn} connected), seed {args.seed},"
          f" network C={args.channels} N={args.cells}, batch {args.batch}, device {device},"
          f" reference {args.reference}, torch threads {torch.get_num_threads()}")
    header = f"{'proxy':<24} {'spearman':>9} {'kendall':>8} {'s/arch':>8}  {'published rho':>13}  source"
    print(header)
    print("-" * len(header))
    for name in sorted(names, key=lambda n: -abs(np.nan_to_num(spearman(scores[n], ref)))):
        for row in [name, *components.get(name, [])]:
            pub, src = PUBLISHED.get(row, ("-", ""))
            label = row if row == name else f"  {row}"
            secs = f"{seconds[row]:>8.3f}" if np.isfinite(seconds[row]) else f"{'':>8}"
            print(f"{label:<24} {spearman(scores[row], ref):>+9.3f} {kendall(scores[row], ref):>+8.3f}"
                  f" {secs}  {pub:>13}  {src}")

    if args.out:
        columns = [row for n in names for row in [n, *components.get(n, [])]]
        with open(args.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["arch", args.reference, *columns])
            for i, a in enumerate(archs):
                w.writerow([a, ref[i], *(repr(scores[n][i]) for n in columns)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
