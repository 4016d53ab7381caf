"""Where the benchmarks find this workplace's data (a user passes --data-root instead).

Imported by the benchmark scripts, which run as ``python benchmarks/NAME.py``
(so this folder is on ``sys.path``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: the workplace's CIFAR-10 copy beside the checkout (a plain clone has none:
#: pass --data-root or --set data.root=...)
WORKPLACE_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10-jpeg.tar.gz"


def data_root_overrides(pipeline: str, data_root: str | None, overrides: list[str]) -> list[str]:
    """``overrides`` preceded by ``data.root=...`` (so a --set still wins) for an ImageFolder pipeline.

    ``data_root`` defaults to the workplace's CIFAR-10 archive when there is one
    (relative to the working directory, so cache keys match earlier runs);
    a pipeline whose dataset is not an ImageFolder is left alone unless
    ``--data-root`` was given.
    """
    from proxynas.config import load_config

    if data_root is None:
        if not WORKPLACE_CIFAR10.is_file() or type(load_config(pipeline, overrides).data).name != "imagefolder":
            return list(overrides)
        data_root = os.path.relpath(WORKPLACE_CIFAR10)  # from the checkout: ../shared/..., as cached runs used
    return [f"data.root={data_root}", *overrides]
