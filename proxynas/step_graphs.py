"""Training steps replayed as CUDA graphs: a small network's whole step as one launch.

A training step of a small network (an NB201 cell network at C=16: some
hundreds of kernels of a few microseconds each) keeps a GPU waiting on the
host, which launches the kernels one by one from Python. A CUDA graph records
the step's kernels once and replays them with one launch (PyTorch, "CUDA
Graphs", whole-network capture: torch.cuda.graph, docs/notes/cuda). What a
graph needs, and what :class:`StepGraphs` provides:

* static inputs: every step's batch is made eagerly (indexing, DSA, a
  teacher's logits) and copied into buffers that the graph reads;
* no host values inside the step: the learning rate is a device tensor set
  before each replay, so the optimizer is :func:`sgd_step_` (torch.optim.SGD
  takes the rate as a host float when it is not compiled);
* state unchanged by capturing: capture needs a few warm-up steps first
  (on a side stream), whose changes to the weights, BatchNorm statistics,
  momentum and any other listed tensor are undone, so training starts where
  eager training would;
* one graph per input shape (a 500-image summary in batches of 256 has a
  last batch of 244), captured when the shape is first seen; the graphs of
  one :class:`StepGraphs` share one memory pool and one capture stream on
  the step's own device (a graph captured on another device's stream would
  be empty: ``run.device=cuda:1``).

On a CPU there are no graphs: the same step runs eagerly on the same static
buffers, which is what the CPU tests check against eager training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

#: warm-up steps before a capture (the PyTorch docs' whole-network example runs 3):
#: they let cuDNN/cuBLAS pick their algorithms and allocate their workspaces
WARMUP_STEPS = 3

Inputs = tuple[torch.Tensor | None, ...]


@torch.no_grad()
def sgd_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    momentum_buffers: Sequence[torch.Tensor],
    lr: torch.Tensor,
    *,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
) -> None:
    """One step of torch.optim.SGD (dampening 0) with the learning rate a device tensor, in place.

    Sutskever et al., "On the importance of initialization and momentum in
    deep learning" (ICML 2013), in PyTorch's form: g <- g + wd * p;
    b <- momentum * b + g; g <- g + momentum * b (Nesterov) or g <- b;
    p <- p - lr * g. ``momentum_buffers`` start at zero, where PyTorch's
    first step copies g instead: momentum * 0 + g is g, so the two agree
    (bit for bit on a CPU, where this is tested against torch.optim.SGD).
    The grads are modified (as PyTorch's foreach SGD does).
    """
    grads = list(grads)
    if weight_decay:
        grads = torch._foreach_add(grads, list(params), alpha=weight_decay)
    if momentum:
        torch._foreach_mul_(list(momentum_buffers), momentum)
        torch._foreach_add_(list(momentum_buffers), grads)
        if nesterov:
            torch._foreach_add_(grads, list(momentum_buffers), alpha=momentum)
        else:
            grads = list(momentum_buffers)
    step = -lr
    for param, grad in zip(params, grads):
        # p + g * (-lr) in one rounding, as PyTorch's p.add_(g, alpha=-lr) rounds it (bit-equal on a CPU)
        param.addcmul_(grad, step)


@dataclass
class _Captured:
    static: Inputs
    replay: Callable[[], None]


class StepGraphs:
    """Run ``step(static_inputs)`` once per call, as a replayed CUDA graph on CUDA.

    ``step`` reads only the tensors it is given (and the tensors of the
    closure it was defined in); ``state`` lists every tensor a step changes
    that must not be changed by warm-up steps (weights, BatchNorm buffers,
    momentum, accumulators). :meth:`__call__` copies its inputs into the
    graph's static inputs and replays the graph. A graph is captured the
    first time an input shape is seen, after ``warmup`` steps whose effect
    on ``state`` is undone; with ``capture`` false (the default off CUDA) the
    step runs eagerly on the static inputs, warm-up included, which is how
    the CPU tests exercise everything but the capture itself.
    """

    def __init__(
        self,
        step: Callable[[Inputs], None],
        state: Sequence[torch.Tensor],
        *,
        device: torch.device,
        capture: bool | None = None,
        warmup: int = WARMUP_STEPS,
    ) -> None:
        self.step = step
        self.state = list(state)
        self.device = device
        self.capture = device.type == "cuda" if capture is None else capture
        self.warmup = warmup
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = None  # one memory pool and capture stream for all of this step's graphs
        self._capture_stream: torch.cuda.Stream | None = None

    @property
    def captured(self) -> int:
        """Graphs (input shapes) seen so far."""
        return len(self._graphs)

    def __call__(self, inputs: Inputs) -> None:
        key = tuple(None if t is None else (tuple(t.shape), t.dtype) for t in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._prepare(inputs)
        for static, value in zip(entry.static, inputs):
            if static is not None:
                static.copy_(value)
        entry.replay()

    def _prepare(self, inputs: Inputs) -> _Captured:
        static = tuple(None if t is None else t.detach().clone() for t in inputs)
        saved = [t.detach().clone() for t in self.state]
        if not self.capture:
            for _ in range(self.warmup):
                self.step(static)
            self._restore(saved)
            step = self.step  # not self in the lambda: no reference cycle
            return _Captured(static, lambda: step(static))
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.step(static)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._restore(saved)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
                self._capture_stream = torch.cuda.Stream(self.device)
            graph = torch.cuda.CUDAGraph()
            capture_graph(graph, lambda: self.step(static), pool=self._pool, stream=self._capture_stream)
        return _Captured(static, graph.replay)

    def _restore(self, saved: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for tensor, value in zip(self.state, saved):
                tensor.copy_(value)


def capture_graph(graph, step: Callable[[], None], *, pool, stream) -> None:
    """Capture ``step()`` into ``graph`` (torch.cuda.graph); if the step fails, raise the step's own error.

    Sharing ``pool`` between the graphs of one step is safe in any replay
    order because nothing a graph allocates is read after its replay: what
    persists (weights, momentum, BatchNorm buffers, loss sums, static inputs,
    the learning rate) was allocated before capture. When the step raises
    inside the capture (out of memory, say), ending the capture may fail too
    ("operation not permitted when stream is capturing", an unjoined side
    stream) and that error would replace the step's, which is what the
    caller tells the user about (an out-of-memory names ``arch_batch``); the
    capture's context manager then also leaves its stream current, so the
    stream that was current is restored.
    """
    current = torch.cuda.current_stream(stream.device)
    failure: BaseException | None = None
    try:
        with torch.cuda.graph(graph, pool=pool, stream=stream):
            try:
                step()
            except BaseException as exc:
                failure = exc
                raise
    except BaseException as exc:
        if failure is None or exc is failure:
            raise
        torch.cuda.set_stream(current)  # ending the capture failed before it restored the stream
        raise failure from None
