"""A small Kedro-style stage-graph engine (domain-agnostic).

A stage is a plain function with named inputs and outputs; the :class:`Runner`
owns caching (:class:`Cache`), I/O and tracking (:class:`Hook`), so stage code
never touches files or trackers.

>>> def double(x):
...     return 2 * x
>>> graph = Graph([Stage("double", double, inputs=("x",), outputs=("y",))], external_inputs=["x"])
>>> Runner(graph, cache=None).run({"x": 21})["y"]
42
"""

from proxynas.engine.cache import Cache, CacheError, CacheMiss, CacheWarning
from proxynas.engine.graph import Graph, Stage
from proxynas.engine.hooks import ConsoleHook, Hook
from proxynas.engine.journal import Journal
from proxynas.engine.keys import canonical_json, stage_key, value_key
from proxynas.engine.runner import Runner, RunOutputs, StageOutputError, StageStatus

__all__ = [
    "Cache",
    "CacheError",
    "CacheMiss",
    "CacheWarning",
    "ConsoleHook",
    "Graph",
    "Hook",
    "Journal",
    "RunOutputs",
    "Runner",
    "Stage",
    "StageOutputError",
    "StageStatus",
    "canonical_json",
    "stage_key",
    "value_key",
]
