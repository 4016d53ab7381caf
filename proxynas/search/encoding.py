"""A search space's integer code as Optuna parameters, so samplers search the encoding.

Every position of :meth:`SearchSpace.encode` (for NB201: the op on each of the
6 cell edges) becomes one categorical parameter ``x<i>`` whose choices are the
op indices ``0..n-1``. Categorical rather than integer because the op order
means nothing: an integer distribution would let TPE's Parzen estimator treat
``avg_pool_3x3`` as lying "between" two convolutions. :class:`proxynas.ledger.Ledger`
uses the same parameters and distributions, so evaluation studies can seed
search studies.
"""

from __future__ import annotations

from typing import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from proxynas.errors import ConfigError
from proxynas.spaces.base import SearchSpace


def param_name(position: int) -> str:
    """The Optuna parameter of code position ``position``."""
    return f"x{position}"


def code_distributions(cardinalities: Sequence[int]) -> dict[str, BaseDistribution]:
    """``{x<i>: CategoricalDistribution(0..n_i-1)}`` for code positions with ``cardinalities`` choices.

    The one encoding of an architecture as Optuna parameters: the ledger's
    evaluation studies and search studies both use it, so ledger trials can
    seed a search (Optuna refuses one parameter with two distributions).
    """
    return {param_name(i): CategoricalDistribution(tuple(range(int(n)))) for i, n in enumerate(cardinalities)}


def arch_distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """:func:`code_distributions` of every code position of ``space``."""
    cards = space.cardinalities()
    if not cards:
        raise ConfigError(f"search space {space.name} has an empty code; it cannot be searched")
    return code_distributions(cards)


def suggest_code(trial: optuna.trial.BaseTrial, space: SearchSpace) -> tuple[int, ...]:
    """Ask ``trial`` for one choice per code position (the sampler decides which)."""
    return tuple(
        int(trial.suggest_categorical(name, dist.choices))
        for name, dist in arch_distributions(space).items()
    )
