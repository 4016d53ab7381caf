"""Checkpoints of a distiller's loop, so that a killed distillation resumes where it stopped.

A distillation of 20,000 iterations lost to a preemption is hours; a
distiller that takes a :class:`Checkpoint` saves its loop state (the
synthetic images and labels, its optimizers' states, every random
generator it draws from, the iteration reached) when :meth:`Checkpoint.due`
says so, and at its start resumes from :meth:`Checkpoint.restore`. A resumed
distillation then ends bit-identical to an uninterrupted one on a CPU, since
everything the remaining iterations depend on was saved.

The pipeline's distill stage keeps the state in the stage's journal
(:mod:`proxynas.engine.journal`), under the stage's cache key, so it is only
ever resumed into the same distillation, and it is deleted once the summary
is cached.

:class:`Loop` is the part the distillers share: the state of one outer loop
(learned tensors, optimizers, generators, history, anything else carried
over) and ``Loop.range``, the loop's ``range`` that resumes and saves.
Tensors are saved as CPU copies, so a checkpoint taken on an accelerator
resumes there (or elsewhere) and the loop may keep updating its own in place.
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from proxynas.engine.journal import Journal

__all__ = ["STATE", "Checkpoint", "Loop", "capture_rng", "detached_copy", "restore_rng"]

#: the journal name of a distiller's loop state
STATE = "distill"


class Checkpoint:
    """Saves a loop state into ``journal`` at most every ``seconds`` (0: every time it is asked)."""

    def __init__(self, journal: Journal | None = None, seconds: float = 60.0) -> None:
        self.journal = journal if journal is not None else Journal()
        self.seconds = float(seconds)
        self._last = time.monotonic()
        self.saves = 0

    def restore(self) -> dict[str, Any] | None:
        """The last saved state (with its ``"iteration"``), or None to start from the beginning.

        A copy: the loop that loads it (an optimizer's ``load_state_dict``
        keeps the tensors it is given) cannot change what is saved.
        """
        state = self.journal.load_state(STATE)
        return detached_copy(state) if isinstance(state, dict) else None

    def due(self) -> bool:
        """Whether the loop should save now (it then calls :meth:`save`)."""
        return time.monotonic() - self._last >= self.seconds

    def save(self, iteration: int, state: dict[str, Any]) -> None:
        """Save ``state`` as reached after ``iteration`` iterations.

        Its tensors are copied to the CPU first, so the loop may go on
        updating its own in place (an in-memory journal keeps the object).
        """
        self.journal.save_state(STATE, {**detached_copy(state), "iteration": int(iteration)})
        self._last = time.monotonic()
        self.saves += 1


def detached_copy(value: Any) -> Any:
    """``value`` with every tensor (in nested dicts, lists and tuples) replaced by a detached CPU copy."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: detached_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [detached_copy(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return copy.deepcopy(value)


def capture_rng(generators: Sequence[torch.Generator] = (), *, global_rng: bool = False) -> dict[str, Any]:
    """The states of ``generators`` and, with ``global_rng``, of torch's (CPU and CUDA), numpy's and Python's
    global RNGs, for :func:`restore_rng`."""
    state: dict[str, Any] = {"generators": [g.get_state() for g in generators]}
    if global_rng:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        state["python"] = random.getstate()
        try:
            import numpy
        except ImportError:  # pragma: no cover - numpy ships with torch
            pass
        else:
            state["numpy"] = numpy.random.get_state()
    return state


def restore_rng(state: Mapping[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Put ``generators`` (same order as captured) and any captured global RNG back as :func:`capture_rng` saw them."""
    saved = state["generators"]
    if len(saved) != len(generators):
        raise ValueError(f"the checkpoint holds {len(saved)} generator states for {len(generators)} generators")
    for generator, generator_state in zip(generators, saved):
        generator.set_state(generator_state)
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])


class Loop:
    """One distiller's outer loop as a checkpointable state: what the remaining iterations depend on.

    ``tensors`` are the learned leaf tensors (synthetic images, labels, step
    sizes), restored in place so the ``optimizers`` that hold them keep
    working; ``generators`` every :class:`torch.Generator` the loop draws
    from (with ``global_rng`` also torch's, numpy's and Python's global RNGs);
    ``history`` the objective recorded so far; ``extra`` / ``load_extra``
    save and restore anything else carried from one iteration to the next
    (e.g. a model pool), as a ``torch.save``-able value.

    :meth:`range` replaces ``range(1, iterations + 1)``::

        loop = Loop(self.name, tensors={"syn": syn}, optimizers=[opt], generators=[g], history=history)
        for it in loop.range(self.iterations, checkpoint):
            ...  # one iteration

    It resumes from ``checkpoint.restore()`` (then starting after the saved
    iteration) and saves after every iteration but the last when
    ``checkpoint.due()``.
    """

    def __init__(
        self,
        method: str,
        *,
        tensors: Mapping[str, torch.Tensor],
        optimizers: Sequence[torch.optim.Optimizer] = (),
        generators: Sequence[torch.Generator] = (),
        history: list[float],
        extra: Callable[[], Any] | None = None,
        load_extra: Callable[[Any], None] | None = None,
        global_rng: bool = False,
    ) -> None:
        if (extra is None) != (load_extra is None):
            raise ValueError("extra and load_extra go together")
        self.method = method
        self.tensors = dict(tensors)
        self.optimizers = list(optimizers)
        self.generators = list(generators)
        self.history = history
        self.extra = extra
        self.load_extra = load_extra
        self.global_rng = global_rng

    def state(self) -> dict[str, Any]:
        """The loop's state now (live tensors: :meth:`Checkpoint.save` copies them)."""
        state = {
            "method": self.method,
            "tensors": dict(self.tensors),
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "rng": capture_rng(self.generators, global_rng=self.global_rng),
            "history": list(self.history),
        }
        if self.extra is not None:
            state["extra"] = self.extra()
        return state

    def load(self, state: Mapping[str, Any]) -> int:
        """Put ``state`` (:meth:`state` of a run of the same distillation) back; returns the iteration it reached."""
        if state.get("method") != self.method:
            raise ValueError(f"the checkpoint is of {state.get('method')!r}, not of {self.method!r}")
        saved = state["tensors"]
        if saved.keys() != self.tensors.keys():
            raise ValueError(f"the checkpoint holds tensors {sorted(saved)}, the loop {sorted(self.tensors)}")
        for name, tensor in self.tensors.items():
            if saved[name].shape != tensor.shape:
                raise ValueError(
                    f"the checkpoint's {name} is {tuple(saved[name].shape)}, the loop's {tuple(tensor.shape)}"
                )
        if len(state["optimizers"]) != len(self.optimizers):
            count = len(state["optimizers"])
            raise ValueError(f"the checkpoint holds {count} optimizers, the loop {len(self.optimizers)}")
        with torch.no_grad():
            for name, tensor in self.tensors.items():
                tensor.copy_(saved[name])
        for optimizer, optimizer_state in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(optimizer_state)
        restore_rng(state["rng"], self.generators)
        self.history[:] = [float(v) for v in state["history"]]
        if self.load_extra is not None:
            self.load_extra(state["extra"])
        return int(state["iteration"])

    def range(self, iterations: int, checkpoint: Checkpoint | None) -> Iterator[int]:
        """Iterations ``1..iterations``, from the one after ``checkpoint``'s state; saves between them when due."""
        state = checkpoint.restore() if checkpoint is not None else None
        first = 1 if state is None else self.load(state) + 1
        for it in range(first, iterations + 1):
            yield it  # the loop body runs here; an exception in it ends the loop without a save
            if checkpoint is not None and it < iterations and checkpoint.due():
                checkpoint.save(it, self.state())
