"""Regularized evolution (Real et al., AAAI 2019, Algorithm 1): tournament, one mutation, aging."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from search_toys import CountingObjective

from proxynas.search import RegularizedEvolutionSampler, create_study, evolve, make_sampler, run_search
from proxynas.search.encoding import arch_distributions

DISTS = {f"x{i}": CategoricalDistribution(tuple(range(5))) for i in range(6)}


def _trial(code, value, number=None, state=TrialState.COMPLETE):
    return create_trial(
        params={f"x{i}": c for i, c in enumerate(code)},
        distributions=DISTS,
        value=value if state == TrialState.COMPLETE else None,
        state=state,
    )


def _population(values):
    rng = np.random.default_rng(123)
    trials = [_trial(tuple(int(c) for c in rng.integers(0, 5, 6)), v) for v in values]
    for n, t in enumerate(trials):
        t.number = n
    return trials


def _diff(a, b):
    return [k for k in a if a[k] != b[k]]


@pytest.mark.parametrize("maximize", [True, False])
def test_child_is_the_tournament_winner_with_exactly_one_op_changed(maximize):
    population = _population([3.0, 9.0, 1.0, 7.0, 5.0])
    best = 1 if maximize else 2
    for seed in range(50):
        # a tournament over the whole population always picks its best member
        p = evolve(population, DISTS, np.random.default_rng(seed), sample_size=5, maximize=maximize)
        assert p.parent == best
        changed = _diff(p.params, population[best].params)
        assert changed == [p.mutated]
        assert p.params[p.mutated] in DISTS[p.mutated].choices


def test_small_tournaments_let_every_member_be_a_parent_and_mutate_every_edge():
    population = _population([3.0, 9.0, 1.0, 7.0, 5.0])
    proposals = [evolve(population, DISTS, np.random.default_rng(s), sample_size=1) for s in range(200)]
    assert {p.parent for p in proposals} == set(range(5))
    assert {p.mutated for p in proposals} == set(DISTS)
    for p in proposals:
        assert len(_diff(p.params, population[p.parent].params)) == 1


def test_population_is_the_p_most_recent_completed_trials_so_the_oldest_ages_out():
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial((3,) * 6, 100.0))  # the best arch ever seen, but the oldest
    study.add_trial(_trial((0,) * 6, None, state=TrialState.PRUNED))  # never a member
    for k in range(1, 4):
        study.add_trial(_trial((k, 0, 0, 0, 0, 1), float(k)))
    sampler = RegularizedEvolutionSampler(population_size=4, sample_size=4, seed=0)
    assert [t.number for t in sampler.population(study)] == [0, 2, 3, 4]
    assert sampler.propose(study, 5, DISTS).parent == 0
    study.add_trial(_trial((4, 0, 0, 0, 0, 1), 4.0))
    # trial 0 is removed although it is the best: aging, not killing the worst
    assert [t.number for t in sampler.population(study)] == [2, 3, 4, 5]
    assert sampler.propose(study, 6, DISTS).parent == 5


def test_initialisation_is_random_until_p_trials_have_completed(space):
    sampler = RegularizedEvolutionSampler(population_size=5, sample_size=2, seed=0)
    study = optuna.create_study(direction="maximize")
    assert sampler.population(study) == [] and sampler.propose(study, 0, DISTS) is None
    run_search(space, CountingObjective(space), sampler, 4, study)
    assert sampler.infer_relative_search_space(study, study.trials[-1]) == {}


def test_every_evolved_trial_replays_from_the_study_alone(full_space):
    """Stateless: trial n's params follow from the trials before it and n, whoever proposed them."""
    objective = CountingObjective(full_space)
    sampler = RegularizedEvolutionSampler(population_size=6, sample_size=3, seed=7)
    study = optuna.create_study(direction="maximize")
    run_search(full_space, objective, sampler, 30, study)
    trials = study.get_trials()
    replayed = 0
    for n in range(6, 30):
        view = optuna.create_study(direction="maximize")
        view.add_trials(trials[:n])
        proposal = RegularizedEvolutionSampler(population_size=6, sample_size=3, seed=7).propose(
            view, n, arch_distributions(full_space)
        )
        assert proposal is not None and proposal.params == trials[n].params
        parent = trials[proposal.parent]
        assert parent.number in [t.number for t in trials[n - 6 : n]]  # from the last P
        assert len(_diff(trials[n].params, parent.params)) == 1
        replayed += 1
    assert replayed == 24


def test_two_workers_on_one_journal_storage_evolve_one_population(full_space, tmp_path):
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    storage = optuna.storages.JournalStorage(backend)
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    workers = [
        optuna.load_study(study_name="s", storage=storage,
                          sampler=RegularizedEvolutionSampler(population_size=4, sample_size=2, seed=3))
        for _ in range(2)
    ]
    objective = CountingObjective(full_space)
    for i in range(16):  # alternate the workers trial by trial
        w = workers[i % 2]
        run_search(full_space, objective, w.sampler, 1, w)
    alone = optuna.create_study(direction="maximize")
    run_search(full_space, CountingObjective(full_space),
               RegularizedEvolutionSampler(population_size=4, sample_size=2, seed=3), 16, alone)
    shared = optuna.load_study(study_name="s", storage=storage)
    assert [t.params for t in shared.trials] == [t.params for t in alone.trials]


def test_finds_the_optimum_of_a_separable_objective_and_beats_random(full_space):
    best = {}
    for name in ("evolution", "random"):
        finals = []
        for seed in range(3):
            factory = make_sampler(name, seed, {"population_size": 10, "sample_size": 5} if name == "evolution" else {})
            result = run_search(full_space, CountingObjective(full_space), factory.create(), 200,
                                create_study(None, None))
            finals.append(result.best_value)
        best[name] = finals
    assert best["evolution"] == [6.0, 6.0, 6.0]  # all six edges nor_conv_3x3, 1 arch in 15,625
    assert np.mean(best["evolution"]) > np.mean(best["random"])


def test_rejects_multi_objective_studies(full_space):
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ValueError, match="multi-objective"):
        run_search(full_space, CountingObjective(full_space),
                   RegularizedEvolutionSampler(population_size=2, sample_size=1, seed=0), 3, study)
