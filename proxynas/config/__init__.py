"""Typed pipeline configs."""

from proxynas.config.pipeline import (
    DistillConfig,
    PipelineConfig,
    ReportConfig,
    RunConfig,
    SampleConfig,
    dump_config,
    load_config,
)
from proxynas.config.typed import apply_overrides, flatten, from_dict, to_dict

__all__ = [
    "DistillConfig",
    "PipelineConfig",
    "ReportConfig",
    "RunConfig",
    "SampleConfig",
    "apply_overrides",
    "dump_config",
    "flatten",
    "from_dict",
    "load_config",
    "to_dict",
]
