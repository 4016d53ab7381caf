"""Search strategies by name: seeded factories of Optuna samplers.

Each entry of :data:`SAMPLERS` is a frozen dataclass whose fields are the
strategy's settings (like every other proxynas plug-in) and whose
:meth:`SamplerFactory.create` builds a fresh, seeded sampler:

* ``random``: uniform random search, the baseline every NAS method must beat
  (Li & Talwalkar, "Random Search and Reproducibility for Neural Architecture
  Search", UAI 2019).
* ``tpe``: Tree-structured Parzen Estimator (Bergstra, Bardenet, Bengio &
  Kegl, "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011).
* ``nsga2``: NSGA-II (Deb, Pratap, Agarwal & Meyarivan, "A Fast and Elitist
  Multiobjective Genetic Algorithm: NSGA-II", IEEE TEVC 2002), two
  objectives: maximise the proxy, minimise a cost (parameters or seconds).
* ``evolution``: regularized evolution (Real et al., AAAI 2019), see
  :mod:`proxynas.search.evolution`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import optuna

from proxynas.config.typed import from_dict
from proxynas.registry import Registry
from proxynas.search.evolution import RegularizedEvolutionSampler

SAMPLERS: Registry[type["SamplerFactory"]] = Registry("sampler")


@dataclass(frozen=True)
class SamplerFactory(ABC):
    """Settings of one search strategy; :meth:`create` makes the Optuna sampler."""

    name: ClassVar[str]
    #: the study directions the sampler optimises (proxy first, then any cost)
    directions: ClassVar[tuple[str, ...]] = ("maximize",)

    seed: int = 0

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @abstractmethod
    def create(self) -> optuna.samplers.BaseSampler:
        """A new sampler (samplers hold per-study state, so never share one between studies)."""


@SAMPLERS.register("random")
@dataclass(frozen=True)
class RandomSearch(SamplerFactory):
    """Uniform random search (Li & Talwalkar, UAI 2019)."""

    def create(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


@SAMPLERS.register("tpe")
@dataclass(frozen=True)
class TPE(SamplerFactory):
    """Tree-structured Parzen Estimator (Bergstra et al., NeurIPS 2011).

    ``multivariate: null`` keeps Optuna's default (joint TPE for one objective).
    """

    n_startup_trials: int = 10
    multivariate: bool | None = None

    def __post_init__(self) -> None:
        if self.n_startup_trials < 0:
            raise ValueError("n_startup_trials must be >= 0")

    def create(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(
            seed=self.seed, n_startup_trials=self.n_startup_trials, multivariate=self.multivariate
        )


@SAMPLERS.register("nsga2")
@dataclass(frozen=True)
class NSGA2(SamplerFactory):
    """NSGA-II (Deb et al., IEEE TEVC 2002): maximise the proxy, minimise the cost."""

    directions: ClassVar[tuple[str, ...]] = ("maximize", "minimize")

    # Optuna's default of 50 leaves one generation in a 100-trial search.
    population_size: int = 20

    def __post_init__(self) -> None:
        if self.population_size < 2:
            raise ValueError("population_size must be >= 2")

    def create(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=self.seed)


@SAMPLERS.register("evolution")
@dataclass(frozen=True)
class Evolution(SamplerFactory):
    """Regularized evolution (Real et al., AAAI 2019): population P, tournament S, age out the oldest."""

    population_size: int = 20
    sample_size: int = 5

    def __post_init__(self) -> None:
        if self.population_size < 1 or not 1 <= self.sample_size <= self.population_size:
            raise ValueError(
                f"need population_size >= 1 and 1 <= sample_size <= population_size,"
                f" got {self.population_size} and {self.sample_size}"
            )

    def create(self) -> optuna.samplers.BaseSampler:
        return RegularizedEvolutionSampler(
            population_size=self.population_size, sample_size=self.sample_size, seed=self.seed
        )


def make_sampler(name: str, seed: int = 0, settings: Mapping[str, Any] | None = None) -> SamplerFactory:
    """The registered strategy ``name`` with ``seed`` and ``settings`` (checked; one-line ConfigError)."""
    return from_dict(SAMPLERS.get(name), {**dict(settings or {}), "seed": seed}, path=f"sampler.{name}")
