"""Build a runnable pipeline from a config: the one place that wires config, graph, cache and hooks.

The CLI, ``search``, ``tune`` and the benchmarks all get their runner here, so
a pipeline is assembled the same way whoever runs it; nothing imports
:mod:`proxynas.cli` (it only parses arguments and calls this module).

    config = load_pipeline("pipelines/quickstart.yaml", ["distill.ipc=5"])
    runner = build_runner(config, tracking_hooks(config))
    outputs = runner.run(run_info=run_info(config, "pipelines/quickstart.yaml"))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from proxynas.config import PipelineConfig, dump_config, load_config, to_dict
from proxynas.device import resolve_device
from proxynas.engine import Cache, ConsoleHook, Hook, Runner
from proxynas.evaluation import default_workers
from proxynas.pipeline import PipelineGraph, build_graph


def load_pipeline(
    path: str | Path, overrides: Sequence[str] = (), *, cache_dir: str | None = None
) -> PipelineConfig:
    """The validated config of pipeline file ``path`` with ``key=value`` overrides (and a cache folder)."""
    overrides = list(overrides)
    if cache_dir:
        overrides.append(f"run.cache_dir={cache_dir}")
    return load_config(path, overrides)


def build_runner(config: PipelineConfig, hooks: Sequence[Hook] = (), *, pipeline: PipelineGraph | None = None) -> Runner:
    """A runner of ``config``'s stage graph over its cache, with ``hooks`` and the run's resources.

    Resources (device, worker count, the storage of distributed scoring) are injected into the stages that
    declare them and are not part of any cache key.
    """
    pipeline = pipeline if pipeline is not None else build_graph(config)
    device = resolve_device(config.run.device)
    if config.run.deterministic and device.type == "cuda":
        use_deterministic_kernels()
    return Runner(
        pipeline.graph,
        Cache(Path(config.run.cache_dir)),
        hooks=hooks,
        resources={
            "device": device,
            "workers": config.run.workers or default_workers(device),
            "storage": config.run.storage or None,
        },
    )


def use_deterministic_kernels() -> None:
    """Make CUDA training repeatable on one machine (``run.deterministic``).

    cuBLAS needs a fixed workspace to be deterministic (set before its first
    use), cuDNN must not pick kernels by timing them, and every op without a
    deterministic kernel then raises instead of silently varying. CPU
    training needs none of this: it is deterministic for a fixed thread
    count, which scoring fixes at one.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def tracking_hooks(
    config: PipelineConfig,
    *,
    tracking_uri: str | None = None,
    mlflow: bool = True,
    ledger: bool = True,
    console: bool = True,
) -> list[Hook]:
    """The hooks of a tracked run: console lines, MLflow (parent + one run per stage) and the ledger.

    Both stores are checked first (cheap, nothing opened), so an unusable
    path is one line before MLflow spends seconds building a fresh store.
    """
    from proxynas.pipeline import EVALUATIONS, is_tracked_output

    if mlflow:
        from proxynas.tracking import check_tracking_uri

        check_tracking_uri(tracking_uri or config.run.tracking_uri)
    if ledger:
        from proxynas.ledger import check_ledger_url

        check_ledger_url(config.run.ledger)

    hooks: list[Hook] = [ConsoleHook()] if console else []
    if mlflow:
        from proxynas.tracking import MLflowHook

        hooks.append(MLflowHook(tracking_uri or config.run.tracking_uri, config.run.experiment,
                                tracked=is_tracked_output))
    if ledger:
        from proxynas.ledger import Ledger, LedgerHook

        hooks.append(LedgerHook(Ledger(config.run.ledger), output=EVALUATIONS))
    return hooks


def run_info(config: PipelineConfig, pipeline_file: str | Path) -> dict[str, Any]:
    """What hooks are told about a run before its first stage (name, file, resolved config)."""
    return {
        "name": config.run.name,
        "pipeline": str(pipeline_file),
        "config": to_dict(config),
        "config_yaml": dump_config(config),
    }
