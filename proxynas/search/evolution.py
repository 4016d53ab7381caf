"""Regularized (aging) evolution as an Optuna sampler.

Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019, Algorithm 1: start from ``P`` random models;
then each cycle draws ``S`` models from the population at random, mutates the
best of that sample (the tournament winner) in one place, adds the child, and
removes the *oldest* model rather than the worst. Aging every model out is the
"regularization": a model survives only by having good descendants, so an
architecture that scored well by luck (a noisy proxy) cannot stay forever.

Optuna has no such sampler. This one keeps no population in memory: at every
trial it derives the population from the study -- the ``P`` most recent
COMPLETE trials by trial number, which is exactly Algorithm 1's queue (append
the child, drop the oldest) -- so several workers on one storage (an RDB or a
journal file) evolve one population, and a resumed study continues where it
stopped. Its randomness comes from a generator seeded by ``(seed, trial
number)``, so a proposal depends only on the study's contents and the trial's
number, never on which process made it or what it proposed before.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import intersection_search_space
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from proxynas.errors import ConfigError


def choices_of(dist: BaseDistribution) -> list[Any] | None:
    """Every value of a discrete distribution (None for a continuous one, which is not mutated)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    return None


@dataclass(frozen=True)
class Proposal:
    """One evolution step: the child's parameters, its parent trial and the parameter changed."""

    params: dict[str, Any]
    parent: int
    mutated: str | None


def evolve(
    population: Sequence[FrozenTrial],
    search_space: Mapping[str, BaseDistribution],
    rng: np.random.Generator,
    *,
    sample_size: int,
    maximize: bool = True,
) -> Proposal:
    """Tournament selection plus a one-parameter mutation (Algorithm 1's loop body).

    ``sample_size`` distinct members are drawn uniformly (they stay in the
    population); the one with the best value is the parent; the child is the
    parent with exactly one discrete parameter changed to a *different*
    value drawn uniformly (a mutation that may leave the model unchanged would
    just re-evaluate the parent). Ties go to the member drawn first.
    """
    if not population:
        raise ValueError("evolve() needs a non-empty population")
    k = min(sample_size, len(population))
    sample = [population[int(i)] for i in rng.choice(len(population), size=k, replace=False)]
    pick = max if maximize else min
    parent = pick(sample, key=lambda t: t.value)
    params = {name: parent.params[name] for name in search_space}
    mutable = [n for n, d in search_space.items() if len(choices_of(d) or ()) > 1]
    if not mutable:  # nothing to change: the child is the parent (a duplicate, cached by the search)
        return Proposal(params, parent.number, None)
    name = mutable[int(rng.integers(len(mutable)))]
    others = [c for c in choices_of(search_space[name]) if c != params[name]]
    params[name] = others[int(rng.integers(len(others)))]
    return Proposal(params, parent.number, name)


class RegularizedEvolutionSampler(BaseSampler):
    """Aging evolution (Real et al., AAAI 2019) over a study's discrete parameters.

    ``population_size`` is Algorithm 1's ``P`` (also the number of random
    trials before evolution starts), ``sample_size`` its ``S``. Single
    objective only. Continuous parameters, and parameters that not every
    population member has, are sampled uniformly at random.
    """

    def __init__(self, *, population_size: int = 20, sample_size: int = 5, seed: int | None = None) -> None:
        for key, value in (("population_size", population_size), ("sample_size", sample_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"evolution: {key} must be an integer >= 1, got {value!r}")
        if sample_size > population_size:
            raise ConfigError(
                f"evolution: sample_size={sample_size} exceeds population_size={population_size};"
                " the tournament draws from the population, lower sample_size"
            )
        self.population_size = population_size
        self.sample_size = sample_size
        # Unseeded: fix fresh entropy once, so proposals are still a pure function
        # of (entropy, trial number) within this sampler's life.
        self._entropy = int(seed) if seed is not None else int(np.random.SeedSequence().entropy)

    def _rng(self, trial_number: int, *extra: int) -> np.random.Generator:
        return np.random.default_rng([self._entropy, trial_number, *extra])

    def population(self, study: optuna.Study) -> list[FrozenTrial]:
        """The ``P`` most recent completed trials by number; empty while fewer have completed."""
        done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
        return done[-self.population_size :] if len(done) >= self.population_size else []

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        self._raise_error_if_multi_objective(study)
        population = self.population(study)
        if not population:
            return {}  # initialisation: every parameter is drawn at random
        space = intersection_search_space(population)
        return {n: d for n, d in space.items() if choices_of(d) is not None}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        proposal = self.propose(study, trial.number, search_space)
        return proposal.params if proposal is not None else {}

    def propose(
        self, study: optuna.Study, trial_number: int, search_space: Mapping[str, BaseDistribution]
    ) -> Proposal | None:
        """The child trial ``trial_number`` gets given ``study``'s current trials (None while initialising).

        A pure function of the study's completed trials and the trial number,
        which is what lets several workers share one population.
        """
        if not search_space:
            return None
        # Re-read: another worker may have completed a trial since the search
        # space was inferred; keep only members that have every parameter.
        population = [t for t in self.population(study) if all(n in t.params for n in search_space)]
        if not population:
            return None
        maximize = study.direction == StudyDirection.MAXIMIZE
        return evolve(population, search_space, self._rng(trial_number), sample_size=self.sample_size, maximize=maximize)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        seed = int(self._rng(trial.number, zlib.crc32(param_name.encode())).integers(2**31))
        return RandomSampler(seed=seed).sample_independent(study, trial, param_name, param_distribution)
