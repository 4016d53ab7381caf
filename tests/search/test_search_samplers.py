"""Every registered sampler proposes archs of the space and is deterministic under a seed."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from search_toys import CountingObjective

from proxynas.errors import ConfigError, UnknownNameError
from proxynas.search import SAMPLERS, create_study, make_sampler, run_search

NAMES = ["random", "tpe", "nsga2", "evolution"]
SMALL = {"random": {}, "tpe": {"n_startup_trials": 5}, "nsga2": {"population_size": 6},
         "evolution": {"population_size": 6, "sample_size": 3}}


def _search(space, name, seed, n=20):
    factory = make_sampler(name, seed, SMALL[name])
    study = create_study(None, None, factory.directions)
    result = run_search(space, CountingObjective(space), factory.create(), n, study)
    return result, study


def test_registry_names_every_strategy():
    assert SAMPLERS.names() == sorted(NAMES)
    assert make_sampler("nsga2").multi_objective and not make_sampler("tpe").multi_objective


@pytest.mark.parametrize("name", NAMES)
def test_sampler_proposes_valid_archs_and_is_deterministic(space, name):
    first, study = _search(space, name, seed=0)
    again, _ = _search(space, name, seed=0)
    other, _ = _search(space, name, seed=1)
    archs = [t.arch for t in first.trials]
    assert len(archs) == 20
    for t in first.trials:
        if t.state == "COMPLETE":
            assert space.validate(t.arch) == t.arch  # a canonical member of the space
        else:
            assert t.state == "PRUNED"  # only a disconnected cell may be rejected
    assert archs == [t.arch for t in again.trials]
    assert archs != [t.arch for t in other.trials]
    assert len(study.directions) == (2 if name == "nsga2" else 1)


def test_nsga2_minimises_the_cost_as_second_objective(space):
    result, study = _search(space, "nsga2", seed=0)
    objective = CountingObjective(space)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    for t in done:
        assert len(t.values) == 2
        assert t.values[1] == objective.num_params(t.user_attrs["arch"]) == t.user_attrs["cost"]
    # the found arch is the best by proxy (first objective), not a Pareto compromise
    assert result.best_value == max(t.values[0] for t in done)


def test_bad_sampler_settings_are_one_line_errors():
    with pytest.raises(UnknownNameError, match="choose one of: evolution, nsga2, random, tpe"):
        make_sampler("bayes")
    with pytest.raises(ConfigError, match="unknown key 'sampler.tpe.population_size'; allowed keys: seed"):
        make_sampler("tpe", 0, {"population_size": 3})
    with pytest.raises(ConfigError, match="sample_size"):
        make_sampler("evolution", 0, {"population_size": 4, "sample_size": 5})
