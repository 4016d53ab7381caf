"""A search space's integer code as Optuna parameters, so samplers search the encoding.

Every position of :meth:`SearchSpace.encode` (for NB201: the op on each of the
6 cell edges) becomes one categorical parameter ``x<i>`` whose choices are the
op indices ``0..n-1``. Categorical rather than integer because the op order
means nothing: an integer distribution would let TPE's Parzen estimator treat
``avg_pool_3x3`` as lying "between" two convolutions. The names match
:class:`proxynas.ledger.Ledger`'s, so search studies and evaluation studies
read the same way.
"""

from __future__ import annotations

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from proxynas.errors import ConfigError
from proxynas.spaces.base import SearchSpace


def param_name(position: int) -> str:
    """The Optuna parameter of code position ``position``."""
    return f"x{position}"


def arch_distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """``{x<i>: CategoricalDistribution(0..n_i-1)}`` for every code position of ``space``."""
    cards = space.cardinalities()
    if not cards:
        raise ConfigError(f"search space {space.name} has an empty code; it cannot be searched")
    return {param_name(i): CategoricalDistribution(tuple(range(n))) for i, n in enumerate(cards)}


def suggest_code(trial: optuna.trial.BaseTrial, space: SearchSpace) -> tuple[int, ...]:
    """Ask ``trial`` for one choice per code position (the sampler decides which)."""
    return tuple(
        int(trial.suggest_categorical(name, dist.choices))
        for name, dist in arch_distributions(space).items()
    )
