"""Networks side by side: n independent networks on one batch, each on its own CUDA stream.

The alternative to horizontal fusion (:mod:`proxynas.models.fused`) for
training n networks at once: nothing is stacked, so any networks work (any
space, any layout), and each keeps its own kernels (no grouped convolutions,
no per-edge gathers). On CUDA network k runs on stream k, so the card may
overlap the n networks' small kernels; autograd runs each backward op on its
forward op's stream (PyTorch, "CUDA semantics: stream semantics of backward
passes"), so the backward passes overlap too, and a training step captured as
a CUDA graph (:mod:`proxynas.step_graphs`) holds the n networks as parallel
branches of one graph. On a CPU they run one after another.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class SideBySide(nn.Module):
    """``forward(x)`` is ``[B, n, classes]``: network k's logits in column k, each network on its own stream.

    The networks are this module's children, so training it trains them (no
    weights to write back). ``streams``: run network k on CUDA stream k
    (default: on CUDA inputs); off, or on a CPU, one after another.
    """

    def __init__(self, networks: Sequence[nn.Module], *, streams: bool = True) -> None:
        super().__init__()
        if not networks:
            raise ValueError("SideBySide needs at least one network")
        self.networks = nn.ModuleList(networks)
        self.use_streams = streams
        self._streams: dict[torch.device, list[torch.cuda.Stream]] = {}

    def __len__(self) -> int:
        return len(self.networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.use_streams and x.is_cuda and len(self.networks) > 1):
            return torch.stack([net(x) for net in self.networks], dim=1)
        here = torch.cuda.current_stream(x.device)
        streams = self._streams_on(x.device)
        outputs = []
        for net, stream in zip(self.networks, streams):
            stream.wait_stream(here)  # x was made on this stream
            with torch.cuda.stream(stream):
                outputs.append(net(x))
            x.record_stream(stream)  # x's memory is not reused until stream k has read it
        for stream, out in zip(streams, outputs):
            here.wait_stream(stream)
            out.record_stream(here)
        return torch.stack(outputs, dim=1)

    def _streams_on(self, device: torch.device) -> list[torch.cuda.Stream]:
        # torch.cuda.Stream hands out a fixed pool of 32 streams per device in turn: beyond 32
        # networks some share a stream, which stays correct but runs them one after another
        if device not in self._streams:
            self._streams[device] = [torch.cuda.Stream(device) for _ in self.networks]
        return self._streams[device]
