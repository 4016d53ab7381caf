"""Runs a :class:`Graph`: computes cache keys, skips cached stages, calls hooks.

Stage code never touches files or trackers: the runner owns caching (through a
:class:`Cache`), I/O and tracking (through :class:`Hook` objects), and injects
*resources* (a device, a ledger, a ``progress`` callable...) into the stage
functions that declare a parameter of that name. Resources are not part of any
cache key. A stage may also declare ``stage_key`` to receive its own cache key:
a name for work it shares with other processes running the same stage (e.g.
the study of :mod:`proxynas.distributed_scoring`), the same in every process,
and ``journal`` to record finished pieces of its work so that a killed run
resumes inside the stage (:mod:`proxynas.engine.journal`; cleared once the
stage's outputs are cached).

Outputs are lazy: a cached stage's entry is read only when a stage that must run
needs one of its outputs, or when the caller (or a hook) reads it from the
mapping :meth:`Runner.run` returns.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from proxynas.engine.cache import Cache
from proxynas.engine.keys import canonicalize, stage_key, value_key
from proxynas.engine.graph import Graph, Stage, StageSignature, _func_name
from proxynas.engine.hooks import Hook
from proxynas.engine.journal import Journal
from proxynas.errors import GraphError, ProxynasError

__all__ = ["Runner", "RunOutputs", "StageStatus", "StageOutputError", "HookWarning"]


class StageOutputError(GraphError):
    """A stage function returned outputs other than the ones it declares."""


class HookWarning(UserWarning):
    """A hook raised while the runner was already handling a stage failure."""


@dataclass(frozen=True)
class StageStatus:
    """One row of :meth:`Runner.status`.

    ``key`` is None when it cannot be computed yet (an external input the stage
    depends on was given neither by value nor by key).
    """

    name: str
    key: str | None
    cached: bool
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def state(self) -> str:
        return "cached" if self.cached else "pending"


def _names(items: Iterable[str]) -> str:
    return "[" + ", ".join(repr(i) for i in items) + "]"


def normalize_outputs(stage: Stage, result: Any) -> dict[str, Any]:
    """Turn a stage function's return value into ``{output name: value}``.

    A single-output stage may return the value itself; a dict whose only key is
    that output's name is read as the mapping form.
    """
    outputs = stage.outputs
    if len(outputs) == 1:
        name = outputs[0]
        if isinstance(result, Mapping) and len(result) == 1 and name in result:
            return {name: result[name]}
        return {name: result}
    if not outputs and result is None:
        return {}
    if not isinstance(result, Mapping):
        raise StageOutputError(
            f"stage {stage.name!r} returned a {type(result).__name__} but declares outputs "
            f"{_names(outputs)}; return a dict with exactly those keys"
        )
    got = list(result.keys())
    if set(got) != set(outputs) or len(got) != len(outputs):
        missing = [o for o in outputs if o not in result]
        extra = [k for k in got if k not in outputs]
        detail = "; ".join(
            part
            for part in (
                f"missing {_names(missing)}" if missing else "",
                f"unexpected {_names(extra)}" if extra else "",
            )
            if part
        )
        raise StageOutputError(
            f"stage {stage.name!r} returned outputs {_names(got)} but declares {_names(outputs)} "
            f"({detail}); return a dict with exactly the declared output names"
        )
    return {name: result[name] for name in outputs}


class _StageProgress:
    """The ``progress(done, total, **info)`` callable a stage receives."""

    def __init__(self, execution: "_Execution", stage: Stage, forward: Any) -> None:
        self._execution = execution
        self._stage = stage
        self._forward = forward

    def __call__(self, done: int, total: int, **info: float) -> None:
        if self._execution.notify:
            for hook in self._execution.hooks:
                hook.on_progress(self._stage, done, total, dict(info))
        if self._forward is not None:
            self._forward(done, total, **info)


class _Execution:
    """State of one run: keys, which stages are cached, values in memory."""

    def __init__(self, runner: "Runner", graph: Graph, keys: dict[str, str], input_keys: dict[str, str],
                 cached: dict[str, bool], inputs: Mapping[str, Any]) -> None:
        self.runner = runner
        self.graph = graph
        self.keys = keys
        self.input_keys = input_keys
        self.cached = cached
        self.hooks = runner.hooks
        self.cache = runner.cache
        self.values: dict[str, Any] = {n: inputs[n] for n in graph.external_inputs if n in inputs}
        self.done: set[str] = set()  # stages whose outputs are in self.values
        self.notify = True  # hooks are called while the pipeline is running
        self._reported: set[int] = set()  # ids of errors already given to on_stage_error

    # -- data access ---------------------------------------------------------
    def value(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        stage = self.graph.producer(name)
        if stage is None:
            raise ProxynasError(
                f"input {name!r} was given only as a key (input_keys) but a stage that reads it must run; "
                f"pass its value in run(inputs={{{name!r}: ...}})"
            )
        self.materialize(stage)
        return self.values[name]

    def is_loaded(self, name: str) -> bool:
        return name in self.values

    def materialize(self, stage: Stage) -> None:
        if stage.name in self.done:
            return
        if self.cached.get(stage.name) and self.cache is not None:
            outputs = self.cache.get(stage.name, self.keys[stage.name])
            if outputs is not None and set(outputs) == set(stage.outputs):
                self.values.update(outputs)
                self.done.add(stage.name)
                return
            if outputs is not None:
                warnings.warn(
                    f"cache entry of stage {stage.name!r} holds outputs {sorted(outputs)}, "
                    f"expected {sorted(stage.outputs)}; recomputing",
                    stacklevel=2,
                )
            self.cached[stage.name] = False
        self.execute(stage)

    # -- running a stage -----------------------------------------------------
    def _kwargs(self, stage: Stage) -> dict[str, Any]:
        kwargs = {name: self.value(name) for name in stage.inputs}
        sig = StageSignature.of(stage.func)
        if sig is None:
            if stage.params is not None:
                kwargs["params"] = stage.params
            return kwargs
        if sig.declares("params") or (sig.var_keyword and stage.params is not None):
            kwargs["params"] = stage.params
        for name, resource in self.runner.resources.items():
            if name != "progress" and sig.declares(name):
                kwargs[name] = resource
        if sig.declares("progress"):
            kwargs["progress"] = _StageProgress(self, stage, self.runner.resources.get("progress"))
        if sig.declares("stage_key"):
            kwargs["stage_key"] = self.keys[stage.name]
        if sig.declares("journal"):
            kwargs["journal"] = self._journal(stage)
        return kwargs

    def _journal(self, stage: Stage) -> Journal:
        if self.cache is None:
            return Journal()
        return self.cache.journal(stage.name, self.keys[stage.name])

    def execute(self, stage: Stage) -> None:
        key = self.keys[stage.name]
        notify = self.notify
        if notify:
            for hook in self.hooks:
                hook.before_stage(stage, key, False)
        try:
            kwargs = self._kwargs(stage)
            start = time.perf_counter()
            result = stage.func(**kwargs)
            seconds = time.perf_counter() - start
            outputs = normalize_outputs(stage, result)
            if self.cache is not None:
                self.cache.save(
                    stage.name,
                    key,
                    outputs,
                    {
                        "version": stage.version,
                        "params": canonicalize(stage.params),
                        "seconds": round(seconds, 6),
                        "inputs": {i: self._data_key(i) for i in stage.inputs},
                        "function": _func_name(stage.func),
                    },
                )
                signature = stage.signature
                if signature is not None and signature.declares("journal"):
                    self._journal(stage).clear()  # the entry holds everything the journal did
        except BaseException as error:
            if notify and id(error) not in self._reported:
                self._reported.add(id(error))
                self.runner._call_safely("on_stage_error", stage, key, error)
            raise
        self.values.update(outputs)
        self.done.add(stage.name)
        self.cached[stage.name] = False
        if notify:
            for hook in self.hooks:
                hook.after_stage(stage, key, outputs, seconds, False)

    def _data_key(self, name: str) -> str:
        stage = self.graph.producer(name)
        return self.keys[stage.name] if stage is not None else self.input_keys[name]


class _LazyOutputs(Mapping[str, Any]):
    def __init__(self, execution: _Execution, names: Iterable[str]) -> None:
        self._execution = execution
        self._names = tuple(names)

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return self._execution.value(name)

    def __contains__(self, name: object) -> bool:  # without loading
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def is_loaded(self, name: str) -> bool:
        """True if ``name``'s value is in memory (reading it would not touch the cache)."""
        return self._execution.is_loaded(name)

    def __repr__(self) -> str:
        parts = [f"{n}{'' if self.is_loaded(n) else ' (lazy)'}" for n in self._names]
        return f"{type(self).__name__}({', '.join(parts)})"


class RunOutputs(_LazyOutputs):
    """What :meth:`Runner.run` returns: a read-only mapping of output name to value.

    Values of cached stages are loaded from the cache on first access;
    ``dict(outputs)`` loads everything.
    """


class Runner:
    """Runs a graph with caching, hooks and injected resources."""

    def __init__(
        self,
        graph: Graph,
        cache: Cache | None = None,
        hooks: Iterable[Hook] = (),
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        self.graph = graph
        self.cache = cache
        self.hooks: tuple[Hook, ...] = tuple(hooks)
        self.resources: dict[str, Any] = dict(resources or {})
        self._check_resources()

    def _check_resources(self) -> None:
        data_names = {i for s in self.graph.stages for i in s.inputs} | set(self.graph.external_inputs)
        for name, value in self.resources.items():
            if name in ("params", "stage_key", "journal"):
                raise GraphError(f"{name!r} cannot be a resource (the runner passes it); rename the resource")
            if name in data_names:
                raise GraphError(
                    f"resource {name!r} has the name of a stage input; rename the resource or the input"
                )
            if name == "progress" and value is not None and not callable(value):
                raise GraphError("the 'progress' resource must be callable as progress(done, total, **info)")
        for stage in self.graph.stages:
            sig = stage.signature
            if sig is None:
                continue
            allowed = set(stage.inputs) | {"params", "progress", "stage_key", "journal"} | set(self.resources)
            missing = sorted(sig.required - allowed)
            if missing:
                raise GraphError(
                    f"stage {stage.name!r}: {_func_name(stage.func)}() requires {missing[0]!r}, which is "
                    f"not an input, 'params' or a resource; pass resources={{{missing[0]!r}: ...}} "
                    "or give the parameter a default"
                )

    # -- planning ------------------------------------------------------------
    def _select(self, targets: Iterable[str] | None) -> Graph:
        if targets is None:
            return self.graph
        if isinstance(targets, str):
            targets = (targets,)
        return self.graph.subgraph(list(targets))

    def _input_keys(
        self, graph: Graph, inputs: Mapping[str, Any], input_keys: Mapping[str, str], strict: bool
    ) -> dict[str, str | None]:
        known = set(self.graph.external_inputs)
        for name in [*inputs, *input_keys]:
            if name not in known:
                producer = self.graph.producer(name)
                why = (
                    f"it is an output of stage {producer.name!r}"
                    if producer is not None
                    else f"external inputs are: {', '.join(self.graph.external_inputs) or '(none)'}"
                )
                raise ProxynasError(f"unknown input {name!r} ({why}); pass only the graph's external inputs")
        keys: dict[str, str | None] = {}
        for name in graph.external_inputs:
            if name in input_keys:
                keys[name] = str(input_keys[name])
            elif name in inputs:
                try:
                    keys[name] = value_key(inputs[name])
                except TypeError:
                    if self.cache is None or not strict:
                        keys[name] = f"unhashed-{name}" if self.cache is None else None
                    else:
                        raise ProxynasError(
                            f"input {name!r} is a {type(inputs[name]).__name__}, which cannot be hashed "
                            f"for the cache key; also pass input_keys={{{name!r}: '<id of its content>'}}"
                        ) from None
            elif strict:
                users = ", ".join(repr(s) for s in graph.consumers(name))
                raise ProxynasError(
                    f"missing input {name!r} (needed by stage {users}); pass run(inputs={{{name!r}: ...}})"
                )
            else:
                keys[name] = None
        return keys

    def _keys(self, graph: Graph, data_keys: Mapping[str, str | None]) -> dict[str, str | None]:
        data = dict(data_keys)
        keys: dict[str, str | None] = {}
        for stage in graph.order():
            upstream = {i: data.get(i) for i in stage.inputs}
            key = None if any(k is None for k in upstream.values()) else stage_key(stage, upstream)
            keys[stage.name] = key
            for out in stage.outputs:
                data[out] = key
        return keys

    # -- public API ----------------------------------------------------------
    def status(
        self,
        inputs: Mapping[str, Any] | None = None,
        targets: Iterable[str] | None = None,
        input_keys: Mapping[str, str] | None = None,
    ) -> list[StageStatus]:
        """Each stage (topological order) with its key and whether it is cached."""
        graph = self._select(targets)
        keys = self._keys(graph, self._input_keys(graph, inputs or {}, input_keys or {}, strict=False))
        rows = []
        for stage in graph.order():
            key = keys[stage.name]
            cached = bool(self.cache is not None and key is not None and self.cache.has(stage.name, key))
            rows.append(StageStatus(stage.name, key, cached, stage.inputs, stage.outputs))
        return rows

    def format_status(
        self,
        inputs: Mapping[str, Any] | None = None,
        targets: Iterable[str] | None = None,
        input_keys: Mapping[str, str] | None = None,
    ) -> str:
        """The graph as a text table: order, stage, inputs -> outputs, cached/pending, key."""
        rows = self.status(inputs, targets, input_keys)
        table = [("#", "stage", "inputs -> outputs", "state", "key")]
        for i, row in enumerate(rows, 1):
            flow = f"{', '.join(row.inputs) or '-'} -> {', '.join(row.outputs) or '-'}"
            table.append((str(i), row.name, flow, row.state, row.key[:12] if row.key else "?"))
        widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
        return "\n".join(lines)

    def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        targets: Iterable[str] | None = None,
        input_keys: Mapping[str, str] | None = None,
        run_info: Mapping[str, Any] | None = None,
    ) -> RunOutputs:
        """Run the graph (or ``targets`` and their upstream) and return every output.

        ``inputs`` gives the external inputs by value; an input whose value is
        not canonicalisable (a tensor, a dataset object) also needs an entry in
        ``input_keys`` identifying its content. An input given only by key is
        enough as long as every stage reading it is cached. ``run_info`` (e.g.
        a run name and the config) is passed on to ``Hook.before_pipeline``,
        together with the engine's ``stages``, ``keys``, ``cached``, ``targets``
        and ``cache_root`` entries.
        """
        inputs = dict(inputs or {})
        graph = self._select(targets)
        input_key_map = self._input_keys(graph, inputs, input_keys or {}, strict=True)
        keys = self._keys(graph, input_key_map)
        cached = {
            name: bool(self.cache is not None and self.cache.has(name, key)) for name, key in keys.items()
        }
        execution = _Execution(self, graph, keys, input_key_map, cached, inputs)
        order = graph.order()
        info = {
            **(run_info or {}),
            "stages": [s.name for s in order],
            "keys": dict(keys),
            "cached": dict(cached),
            "targets": None if targets is None else list((targets,) if isinstance(targets, str) else targets),
            "cache_root": None if self.cache is None else str(self.cache.root),
        }
        if self.cache is not None and not all(cached.values()):
            self.cache.check_writable()  # before any work that it could not keep
        try:
            for hook in self.hooks:
                hook.before_pipeline(graph, info)
            for stage in order:
                if stage.name in execution.done:
                    continue  # recomputed already because its cache entry was unreadable
                key = keys[stage.name]
                if not execution.cached[stage.name] and self.cache is not None:
                    # another run of this pipeline may be computing the entry: wait for it, then reuse it
                    with self.cache.lock(stage.name, key):
                        if self.cache.has(stage.name, key):
                            execution.cached[stage.name] = True
                        else:
                            execution.execute(stage)
                            continue
                if execution.cached[stage.name]:
                    for hook in self.hooks:
                        hook.before_stage(stage, key, True)
                    lazy = _LazyOutputs(execution, stage.outputs)
                    for hook in self.hooks:
                        hook.after_stage(stage, key, lazy, 0.0, True)
                else:
                    execution.execute(stage)
            result = RunOutputs(execution, graph.outputs)
            for hook in self.hooks:
                hook.after_pipeline(result)
        except BaseException as error:
            self._call_safely("on_pipeline_error", error)
            raise
        finally:
            execution.notify = False
        return result

    def _call_safely(self, method: str, *args: Any) -> None:
        """Call a failure hook on every hook; a hook error must not mask the original one."""
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(
                    f"{type(hook).__name__}.{method} raised {type(exc).__name__}: {exc}",
                    HookWarning,
                    stacklevel=3,
                )
