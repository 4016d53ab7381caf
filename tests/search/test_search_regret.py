"""Regret against a reference table, checked by hand on tiny tables."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from proxynas.errors import ArchError, DataError
from proxynas.reference import NB201Table
from proxynas.search import Reference, TableObjective, collect, create_study, make_sampler, run_search

A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
B = "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
C = "|skip_connect~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
D = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_regret_is_best_of_the_whole_table_minus_the_found_arch():
    table = NB201Table([0, 1, 2, 3], [A, B, C, D], {"acc": [90.0, 94.5, 91.0, float("nan")]})
    ref = Reference.from_table(table, "acc")
    assert ref.best == 94.5 and ref.best_arch == B and len(ref) == 3  # NaN (missing) is not a value
    assert ref.regret(A) == pytest.approx(4.5)
    assert ref.regret(B) == 0.0
    assert ref.regret(C) == pytest.approx(3.5)
    with pytest.raises(ArchError, match="has no value in reference acc"):
        ref.regret(D)
    with pytest.raises(DataError, match="no finite values"):
        Reference({A: float("nan")})


def _study(rows):
    """A study whose trials are ``(arch, proxy value or None for pruned, seconds, duplicate_of)``."""
    dists = {"x0": CategoricalDistribution((0, 1))}
    study = optuna.create_study(direction="maximize")
    for arch, value, seconds, dup in rows:
        attrs = {"arch": arch, "seconds": seconds, **({"duplicate_of": dup} if dup is not None else {})}
        study.add_trial(create_trial(
            params={"x0": 0}, distributions=dists, value=value, user_attrs=attrs,
            state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
        ))
    return study


def test_best_so_far_regret_and_cost_curves_by_hand():
    ref = Reference({A: 90.0, B: 94.5, C: 91.0})
    #                proxy:  A=1     (pruned)   C=3     B=3 (tie: C stays)   A again
    study = _study([(A, 1.0, 2.0, None), (D, None, 0.0, None), (C, 3.0, 5.0, None),
                    (B, 3.0, 4.0, None), (A, 1.0, 0.0, 0)])
    r = collect(study, ref)
    assert r.best_so_far == (1.0, 1.0, 3.0, 3.0, 3.0)
    assert r.reference_so_far == (90.0, 90.0, 91.0, 91.0, 91.0)
    assert r.regret_so_far == pytest.approx((4.5, 4.5, 3.5, 3.5, 3.5))
    assert r.cost_so_far == (2.0, 2.0, 7.0, 11.0, 11.0)
    assert (r.best_arch, r.best_value, r.reference_value, r.regret) == (C, 3.0, 91.0, pytest.approx(3.5))
    assert r.search_seconds == 11.0 and r.n_trials == 5 and r.n_evaluated == 3
    assert r.at(2) == {"trials": 2.0, "best": 1.0, "seconds": 2.0, "reference": 90.0, "regret": pytest.approx(4.5)}


def test_no_reference_no_regret():
    r = collect(_study([(D, None, 0.0, None), (A, 2.0, 1.0, None)]))
    assert math.isnan(r.best_so_far[0]) and r.best_so_far[1] == 2.0
    assert r.regret is None and r.regret_so_far is None and r.best_arch == A


def test_oracle_search_regret_on_a_synthetic_table_of_the_whole_space(full_space):
    archs = list(full_space.enumerate())
    # a separable synthetic "accuracy": +1 per nor_conv_3x3 edge, +0.5 per skip
    acc = [sum({3: 1.0, 1: 0.5}.get(c, 0.0) for c in full_space.encode(a)) for a in archs]
    table = NB201Table(range(len(archs)), archs, {"acc": acc, "params_MB": [0.0] * len(archs)})
    ref = Reference.from_table(table, "acc")
    assert ref.best == 6.0
    oracle = TableObjective(table, "acc", name="oracle")
    r = run_search(full_space, oracle, make_sampler("random", 0).create(), 25, create_study(None, None), ref)
    found = max((t for t in r.trials if t.value is not None), key=lambda t: t.value)
    assert r.best_value == found.value == r.reference_value  # oracle: proxy == reference
    assert r.regret == pytest.approx(6.0 - found.value)
    assert r.regret_so_far[-1] == r.regret and list(r.regret_so_far) == sorted(r.regret_so_far, reverse=True)


def test_a_table_objectives_key_follows_the_tables_content_not_its_path(full_space, tmp_path):
    from proxynas.reference import export_csv, load_table

    archs = list(full_space.enumerate())[:50]
    table = NB201Table(range(len(archs)), archs, {"acc": [float(i) for i in range(50)], "params_MB": [0.0] * 50})
    here, there = export_csv(table, tmp_path / "a" / "t.csv"), export_csv(table, tmp_path / "b" / "t.csv")
    assert TableObjective(load_table(here), "acc").key == TableObjective(load_table(there), "acc").key
    changed = NB201Table(range(50), archs, {"acc": [float(i) for i in range(49)] + [99.0], "params_MB": [0.0] * 50})
    assert TableObjective(changed, "acc").key != TableObjective(table, "acc").key
    assert TableObjective(table, "acc").key != TableObjective(table, "params_MB").key
