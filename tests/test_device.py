"""proxynas/device.py: choosing a device, and copying draws to it without stalling the host."""

import pytest
import torch

from proxynas.device import resolve_device, to_device_async
from proxynas.errors import ConfigError


def test_a_copy_to_the_cpu_is_a_plain_to():
    draws = torch.arange(5)
    assert to_device_async(draws, torch.device("cpu")) is draws


def test_a_copy_to_cuda_goes_through_pinned_memory_without_blocking(monkeypatch):
    calls = []

    class Pinned:
        def to(self, device, **options):
            calls.append(("to", device, options))
            return "on the device"

    def pin_memory(self):
        calls.append(("pin", self.tolist()))
        return Pinned()

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    assert to_device_async(torch.arange(3), torch.device("cuda")) == "on the device"
    assert calls == [("pin", [0, 1, 2]), ("to", torch.device("cuda"), {"non_blocking": True})]


def test_an_unknown_device_name_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError, match="use auto, cpu or cuda"):
        resolve_device("tpu")
