"""run_search: study records, duplicate archs reused, invalid archs pruned, score cache, plot."""

from __future__ import annotations

import json

import optuna
import pytest
from search_toys import CONV3, CountingObjective

from proxynas.errors import ConfigError, DataError
from proxynas.search import (
    CachedObjective,
    best_so_far_png,
    create_study,
    make_sampler,
    regret_png,
    run_search,
    trials_table,
)

ALL_CONV3 = {f"x{i}": CONV3 for i in range(6)}
DISCONNECTED = {f"x{i}": 0 for i in range(6)}  # every edge 'none'


def test_duplicate_archs_are_not_trained_again(space):
    objective = CountingObjective(space, seconds=2.0)
    study = create_study(None, None)
    for params in (ALL_CONV3, DISCONNECTED, ALL_CONV3, ALL_CONV3):
        study.enqueue_trial(params)
    result = run_search(space, objective, make_sampler("random", 0).create(), 4, study)
    assert len(objective.calls) == 1  # scored once, reused twice; the disconnected cell never scored
    states = [t.state for t in result.trials]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"]
    first, invalid, dup1, dup2 = study.trials
    assert dup1.value == dup2.value == first.value == 6.0
    assert dup1.user_attrs["duplicate_of"] == dup2.user_attrs["duplicate_of"] == 0
    assert dup1.user_attrs["seconds"] == 0.0 and dup1.user_attrs["arch_seconds"] == 2.0
    assert "disconnected" in invalid.user_attrs["invalid"]
    assert result.search_seconds == 2.0 and result.n_evaluated == 1
    assert first.user_attrs["arch"] == space.decode((CONV3,) * 6)


def test_duplicates_are_found_across_workers_through_the_storage(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'ledger.db'}"
    objective = CountingObjective(space)
    for _ in range(2):  # two "workers": separate study objects on one storage
        study = create_study("shared", storage)
        study.enqueue_trial(ALL_CONV3)
        run_search(space, objective, make_sampler("random", 0).create(), 1, study)
    assert len(objective.calls) == 1
    result = run_search(space, objective, make_sampler("random", 1).create(), 0, create_study("shared", storage))
    assert result.n_trials == 2 and result.trials[1].duplicate_of == 0  # a resumed study keeps its history


def test_study_records_arch_and_cost_per_trial(space):
    study = create_study(None, None)
    result = run_search(space, CountingObjective(space, seconds=0.5), make_sampler("tpe", 0).create(), 12, study)
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert space.validate(t.user_attrs["arch"]) == t.user_attrs["arch"]
        assert t.user_attrs["seconds"] in (0.0, 0.5)
    rows = trials_table(result)
    assert len(rows) == 12 and {"trial", "arch", "value", "best_so_far", "seconds"} <= set(rows[0])


def test_direction_mismatches_are_one_line_errors(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'ledger.db'}"
    create_study("s", storage)
    with pytest.raises(ConfigError, match="optimises maximize but this search needs maximize, minimize"):
        create_study("s", storage, ("maximize", "minimize"))
    assert len(create_study("s", storage, ("maximize", "minimize"), fresh=True).directions) == 2
    with pytest.raises(ConfigError, match="proxies are maximised"):
        run_search(space, CountingObjective(space), make_sampler("random").create(), 1,
                   optuna.create_study(direction="minimize"))
    with pytest.raises(ConfigError, match="unknown cost"):
        run_search(space, CountingObjective(space), make_sampler("random").create(), 1,
                   create_study(None, None), cost="flops")


def test_score_cache_file_is_shared_between_searches(space, tmp_path):
    inner = CountingObjective(space, seconds=3.0)
    for seed in range(3):  # three seeds of one benchmark, one cache file
        cached = CachedObjective(inner, tmp_path / "scores")
        result = run_search(space, cached, make_sampler("random", 0).create(), 5, create_study(None, None))
        assert result.search_seconds == pytest.approx(3.0 * result.n_evaluated)  # cost as if computed
    assert len(inner.calls) == len(set(inner.calls)) == len(cached)
    (path,) = (tmp_path / "scores").iterdir()
    data = json.loads(path.read_text())
    assert data["key"] == "toy-count" and len(data["scores"]) == len(cached)
    other = CountingObjective(space)
    other.key = "another-objective"
    path.rename(path.with_name(f"count-{other.key[:16]}.json"))
    with pytest.raises(DataError, match="belongs to another objective; delete it"):
        CachedObjective(other, tmp_path / "scores")


def test_best_so_far_plot_is_a_png(space):
    png = best_so_far_png({"tpe": [1.0, 2.0, 2.0], "random": [0.5, 0.5, 3.0]},
                          regret={"tpe": [3.0, 1.0, 1.0], "random": [4.0, 4.0, 0.0]})
    assert regret_png({"tpe": [3.0, 0.0]}).startswith(b"\x89PNG")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_invalid_archs_are_pruned_in_two_objective_studies_too(space):
    factory = make_sampler("nsga2", 0, {"population_size": 4})
    study = create_study(None, None, factory.directions)
    study.enqueue_trial(DISCONNECTED)
    result = run_search(space, CountingObjective(space), factory.create(), 6, study)
    assert [t.state for t in result.trials] == ["PRUNED"] + ["COMPLETE"] * 5
    assert result.best_arch is not None and result.trials[0].value is None
