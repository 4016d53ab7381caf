"""NAS search: find the best architecture of a space by a proxy, with Optuna samplers.

* :mod:`~proxynas.search.samplers` -- strategies by name (random, TPE, NSGA-II, regularized evolution)
* :mod:`~proxynas.search.evolution` -- regularized evolution (Real et al., AAAI 2019) as an Optuna sampler
* :mod:`~proxynas.search.encoding` -- a space's code as Optuna parameters
* :mod:`~proxynas.search.objective` -- a pipeline row (or a benchmark column) as the search objective
* :mod:`~proxynas.search.search` -- :func:`run_search` and its :class:`SearchResult`
* :mod:`~proxynas.search.regret` -- regret against a ground-truth table of the whole space
* :mod:`~proxynas.search.plots` -- best-so-far / reference / regret curves as PNG
* :mod:`~proxynas.search.cli` -- ``proxynas search``

Names are imported on first use (PEP 562): ``proxynas.cli`` imports
``proxynas.search.cli`` for every command, and the rest needs torch and Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SAMPLERS": "samplers",
    "SamplerFactory": "samplers",
    "RandomSearch": "samplers",
    "TPE": "samplers",
    "NSGA2": "samplers",
    "Evolution": "samplers",
    "make_sampler": "samplers",
    "RegularizedEvolutionSampler": "evolution",
    "Proposal": "evolution",
    "evolve": "evolution",
    "arch_distributions": "encoding",
    "suggest_code": "encoding",
    "ArchObjective": "objective",
    "Evaluation": "objective",
    "ProxyObjective": "objective",
    "TableObjective": "objective",
    "CachedObjective": "objective",
    "Reference": "regret",
    "run_search": "search",
    "create_study": "search",
    "collect": "search",
    "SearchResult": "search",
    "TrialRecord": "search",
    "trials_table": "search",
    "running_best": "search",
    "best_so_far_png": "plots",
    "regret_png": "plots",
    "search_png": "plots",
    "add_search_parser": "cli",
    "cmd_search": "cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
