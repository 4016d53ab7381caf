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


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without making the host wait for the device.

    A copy from ordinary (pageable) host memory to a CUDA device first waits
    until the device has finished the work queued before it, so a training
    step that copies its random draws (DSA's omegas, an epoch's batch order)
    would stall the host once per copy and the device would idle while the
    next step's kernels are launched. From pinned memory the copy is queued
    like a kernel (PyTorch's pinned-memory allocator keeps the buffer until
    the copy has run). Elsewhere this is ``tensor.to(device)``.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
