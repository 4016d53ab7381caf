"""Device selection: CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch

from proxynas.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; ``"cpu"``/``"cuda[:i]"`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name!r} but no CUDA device is visible; use run.device=auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"run.device={name!r} is not a device; use auto, cpu or cuda[:N]") from None
