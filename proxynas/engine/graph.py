"""Stages and the graph they form.

A :class:`Stage` is a plain function with named inputs and outputs. A
:class:`Graph` links stages by those names (an input of one stage is the output
of another, or an *external* input given to the runner) and checks the result
once, at construction: every problem is a one-line :class:`GraphError` that names
the problem and the fix.
"""

from __future__ import annotations

import difflib
import heapq
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from proxynas.engine.keys import canonicalize
from proxynas.errors import GraphError

__all__ = ["Stage", "Graph", "StageSignature"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

#: Argument names the runner fills itself; no input may use them.
RESERVED_ARGS = frozenset({"params", "progress"})


def _as_names(value: Any, what: str, stage: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise GraphError(
            f"stage {stage!r}: {what} must be a sequence of names, got {type(value).__name__}; "
            f"pass e.g. {what}=('x',)"
        ) from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise GraphError(
                f"stage {stage!r}: {what} contains {name!r}; every {what[:-1]} name must be a non-empty string"
            )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GraphError(
            f"stage {stage!r} lists {what[:-1]} {dupes[0]!r} twice; list each name once"
        )
    return names


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline.

    ``func`` is called as ``func(**{input: value}, [params=...], [resources...])``
    and returns a dict keyed by exactly ``outputs`` or, for a single output, the
    value itself. ``params`` is the stage's config section (frozen dataclass or
    JSON-able data); it and ``version`` are part of the cache key, so bump
    ``version`` when the function's behaviour changes.
    """

    name: str
    func: Callable[..., Any]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    params: Any = None
    version: str = "1"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise GraphError(
                f"invalid stage name {self.name!r}; use letters, digits, '_', '.' or '-' "
                "(it names a cache folder)"
            )
        if not callable(self.func):
            raise GraphError(
                f"stage {self.name!r}: func must be callable, got {type(self.func).__name__}"
            )
        object.__setattr__(self, "inputs", _as_names(self.inputs, "inputs", self.name))
        object.__setattr__(self, "outputs", _as_names(self.outputs, "outputs", self.name))
        object.__setattr__(self, "version", str(self.version))
        for name in self.inputs:
            if name in RESERVED_ARGS:
                raise GraphError(
                    f"stage {self.name!r}: input name {name!r} is reserved for the runner; rename the input"
                )
        both = [n for n in self.outputs if n in self.inputs]
        if both:
            raise GraphError(
                f"stage {self.name!r} both consumes and produces {both[0]!r} (a cycle); "
                "give the output a new name"
            )

    @property
    def signature(self) -> "StageSignature | None":
        """What the function accepts (None when it cannot be inspected)."""
        return StageSignature.of(self.func)


@dataclass(frozen=True)
class StageSignature:
    """The keyword arguments a stage function accepts."""

    names: frozenset[str]  # parameters passable by keyword
    required: frozenset[str]  # keyword-passable parameters without a default
    positional_only_required: frozenset[str]
    var_keyword: bool

    @classmethod
    def of(cls, func: Callable[..., Any]) -> "StageSignature | None":
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return None
        names, required, pos_only = set(), set(), set()
        var_kw = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind is p.VAR_POSITIONAL:
                continue
            elif p.kind is p.POSITIONAL_ONLY:
                if p.default is p.empty:
                    pos_only.add(p.name)
            else:
                names.add(p.name)
                if p.default is p.empty:
                    required.add(p.name)
        return cls(frozenset(names), frozenset(required), frozenset(pos_only), var_kw)

    def accepts(self, name: str) -> bool:
        return name in self.names or self.var_keyword

    def declares(self, name: str) -> bool:
        """True if ``name`` is an explicit parameter (``**kwargs`` does not count)."""
        return name in self.names


def _func_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Graph:
    """Stages linked by data names, validated at construction.

    ``external_inputs`` are the names the caller supplies to ``Runner.run``.
    """

    def __init__(self, stages: Sequence[Stage], external_inputs: Iterable[str] = ()) -> None:
        if isinstance(external_inputs, str):
            external_inputs = (external_inputs,)
        self._stages: tuple[Stage, ...] = tuple(stages)
        self._external: tuple[str, ...] = tuple(dict.fromkeys(external_inputs))
        self._by_name: dict[str, Stage] = {}
        self._index: dict[str, int] = {}
        self._producer: dict[str, Stage] = {}
        self._consumers: dict[str, list[Stage]] = {}
        self._validate()
        self._order = self._toposort()
        self._position = {s.name: i for i, s in enumerate(self._order)}

    # -- construction --------------------------------------------------------
    def _validate(self) -> None:
        for i, stage in enumerate(self._stages):
            if not isinstance(stage, Stage):
                raise GraphError(
                    f"graph item {i} is a {type(stage).__name__}, not a Stage; wrap the function in Stage(...)"
                )
            if stage.name in self._by_name:
                raise GraphError(
                    f"two stages are named {stage.name!r}; give each stage a unique name"
                )
            self._by_name[stage.name] = stage
            self._index[stage.name] = i
        for stage in self._stages:
            for out in stage.outputs:
                other = self._producer.get(out)
                if other is not None:
                    raise GraphError(
                        f"output {out!r} is produced by both stage {other.name!r} and stage {stage.name!r}; "
                        "rename one of the outputs"
                    )
                if out in self._external:
                    raise GraphError(
                        f"{out!r} is both an external input and an output of stage {stage.name!r}; "
                        "drop it from external_inputs or rename the output"
                    )
                self._producer[out] = stage
        for stage in self._stages:
            for inp in stage.inputs:
                self._consumers.setdefault(inp, []).append(stage)
                if inp not in self._producer and inp not in self._external:
                    hint = _suggest(inp, [*self._producer, *self._external])
                    raise GraphError(
                        f"stage {stage.name!r} needs input {inp!r} that no stage produces{hint}; "
                        f"add a stage that outputs {inp!r} or list it in external_inputs"
                    )
        for stage in self._stages:
            self._check_function(stage)

    @staticmethod
    def _check_function(stage: Stage) -> None:
        sig = stage.signature
        if sig is None:
            return
        fname = _func_name(stage.func)
        if sig.positional_only_required:
            bad = sorted(sig.positional_only_required)[0]
            raise GraphError(
                f"stage {stage.name!r}: {fname}() has positional-only parameter {bad!r}; "
                "stage functions are called with keywords, so make it a normal parameter"
            )
        for inp in stage.inputs:
            if not sig.accepts(inp):
                raise GraphError(
                    f"stage {stage.name!r} declares input {inp!r} but {fname}() has no parameter "
                    f"{inp!r}{_suggest(inp, sig.names)}; rename the parameter or the input"
                )
        if stage.params is not None and not sig.accepts("params"):
            raise GraphError(
                f"stage {stage.name!r} has params but {fname}() has no 'params' parameter; "
                "add one or drop the stage's params"
            )
        if stage.params is not None:
            try:
                canonicalize(stage.params)
            except TypeError as exc:
                raise GraphError(
                    f"stage {stage.name!r} params cannot be part of a cache key: {exc}"
                ) from None

    def _toposort(self) -> list[Stage]:
        deps = {s.name: self._direct_upstream(s) for s in self._stages}
        indeg = {name: len(d) for name, d in deps.items()}
        children: dict[str, list[str]] = {s.name: [] for s in self._stages}
        for name, d in deps.items():
            for parent in d:
                children[parent].append(name)
        ready = [self._index[n] for n, k in indeg.items() if k == 0]
        heapq.heapify(ready)
        order: list[Stage] = []
        while ready:
            stage = self._stages[heapq.heappop(ready)]
            order.append(stage)
            for child in children[stage.name]:
                indeg[child] -= 1
                if indeg[child] == 0:
                    heapq.heappush(ready, self._index[child])
        if len(order) != len(self._stages):
            left = {n for n, k in indeg.items() if k > 0}
            cycle = self._find_cycle(left, deps)
            raise GraphError(
                f"stage graph has a cycle: {' -> '.join(cycle)} (each feeds the next); "
                "break it by removing or renaming one of these inputs"
            )
        return order

    def _find_cycle(self, left: set[str], deps: dict[str, list[str]]) -> list[str]:
        # Every stage left over has a producer that is also left over, so
        # walking backwards along producers must revisit a stage.
        start = min(left, key=self._index.__getitem__)
        path: list[str] = []
        seen: dict[str, int] = {}
        node = start
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = next(p for p in deps[node] if p in left)
        loop = path[seen[node]:]
        loop.reverse()  # producer -> consumer order
        # start the loop at its earliest-declared stage, for a stable message
        i = min(range(len(loop)), key=lambda k: self._index[loop[k]])
        loop = loop[i:] + loop[:i]
        return loop + [loop[0]]

    def _direct_upstream(self, stage: Stage) -> list[str]:
        names: list[str] = []
        for inp in stage.inputs:
            prod = self._producer.get(inp)
            if prod is not None and prod.name not in names:
                names.append(prod.name)
        return names

    # -- queries -------------------------------------------------------------
    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages in declaration order."""
        return self._stages

    @property
    def external_inputs(self) -> tuple[str, ...]:
        return self._external

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every data name some stage produces, in topological order."""
        return tuple(o for s in self._order for o in s.outputs)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``; GraphError if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise GraphError(
                f"unknown stage {name!r}{_suggest(name, self._by_name)}; "
                f"stages are: {', '.join(self._by_name) or '(none)'}"
            ) from None

    def order(self) -> list[Stage]:
        """Stages in topological order; ties go to the earlier-declared stage."""
        return list(self._order)

    def producers(self, name: str) -> list[str]:
        """Stages producing the data ``name``: ``[stage]``, or ``[]`` for an external input."""
        stage = self._producer.get(name)
        if stage is not None:
            return [stage.name]
        if name in self._external:
            return []
        raise GraphError(
            f"no stage produces {name!r} and it is not an external input"
            f"{_suggest(name, [*self._producer, *self._external])}; check the name"
        )

    def producer(self, name: str) -> Stage | None:
        """The stage producing data ``name`` (None for external or unknown names)."""
        return self._producer.get(name)

    def consumers(self, name: str) -> list[str]:
        """Stages reading the data ``name``, in declaration order."""
        return [s.name for s in self._consumers.get(name, [])]

    def dependencies(self, stage_name: str) -> list[str]:
        """Stages that directly feed ``stage_name``."""
        return self._direct_upstream(self.stage(stage_name))

    def upstream(self, stage_name: str) -> list[str]:
        """All stages ``stage_name`` depends on (transitively), in topological order."""
        self.stage(stage_name)
        need: set[str] = set()
        todo = [stage_name]
        while todo:
            for parent in self._direct_upstream(self._by_name[todo.pop()]):
                if parent not in need:
                    need.add(parent)
                    todo.append(parent)
        return [s.name for s in self._order if s.name in need]

    def downstream(self, stage_name: str) -> list[str]:
        """All stages depending on ``stage_name`` (transitively), in topological order."""
        self.stage(stage_name)
        hit: set[str] = {stage_name}
        out: list[str] = []
        for s in self._order[self._position[stage_name] + 1:]:
            if any(p in hit for p in self._direct_upstream(s)):
                hit.add(s.name)
                out.append(s.name)
        return out

    def subgraph(self, targets: Iterable[str]) -> "Graph":
        """The graph of ``targets`` (stage names) and everything they need."""
        if isinstance(targets, str):
            targets = (targets,)
        keep: set[str] = set()
        names = list(targets)
        if not names:
            raise GraphError("subgraph() got no target stages; name at least one stage")
        for name in names:
            keep.add(self.stage(name).name)
            keep.update(self.upstream(name))
        stages = [s for s in self._stages if s.name in keep]
        used = {i for s in stages for i in s.inputs}
        return Graph(stages, [e for e in self._external if e in used])

    # -- container protocol --------------------------------------------------
    def __contains__(self, stage_name: object) -> bool:
        return stage_name in self._by_name

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._stages)

    def __repr__(self) -> str:
        return f"Graph({', '.join(s.name for s in self._order)})"
