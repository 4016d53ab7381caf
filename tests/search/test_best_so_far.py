"""The best-so-far series of a search and the figure its MLflow run gets."""

from __future__ import annotations

import argparse
import io
import itertools
import math

import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image

from proxynas.search import (
    Reference,
    add_search_parser,
    cmd_search,
    create_study,
    make_sampler,
    run_search,
    running_best,
    search_png,
)
from proxynas.spaces import NB201Space

from tests.quickstart import QUICKSTART
from tests.search.search_toys import CONV3, CountingObjective

PNG = b"\x89PNG\r\n\x1a\n"
SKIP = 1  # index of skip_connect in NB201's op list


def _width(png: bytes) -> int:
    assert png.startswith(PNG)
    return Image.open(io.BytesIO(png)).size[0]


def test_running_best_is_the_running_max_or_min_skipping_missing_values():
    values = [None, 1.0, math.nan, 3.0, 2.0, -math.inf, 5.0, 5.0]
    up = running_best(values)
    assert math.isnan(up[0]) and up[1:] == (1.0, 1.0, 3.0, 3.0, 3.0, 5.0, 5.0)
    down = running_best(values, maximize=False)
    assert math.isnan(down[0]) and down[1:] == (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert running_best([4.0, 2.0, 3.0, 1.0], maximize=False) == (4.0, 2.0, 2.0, 1.0)
    assert running_best([]) == ()


def _reference(space: NB201Space) -> Reference:
    """Ground truth over the whole space that disagrees with the counting objective: skips are best."""
    codes = itertools.product(*(range(c) for c in space.cardinalities()))
    return Reference({space.decode(c): float(sum(op == SKIP for op in c)) + 0.1 * sum(op == CONV3 for op in c)
                      for c in codes})


def test_a_searchs_best_so_far_is_the_running_best_of_its_trials(full_space):
    reference = _reference(full_space)
    result = run_search(full_space, CountingObjective(full_space), make_sampler("random", 3).create(), 25,
                        create_study(None, None), reference)
    values = [t.value for t in result.trials]
    assert result.best_so_far == running_best(values)
    assert all(a <= b for a, b in zip(result.best_so_far, result.best_so_far[1:]))  # never gets worse
    assert result.best_so_far[-1] == max(v for v in values if v is not None)
    # the best arch visited (what an oracle would pick among them) is at least as good as the found one
    visited = running_best([t.reference for t in result.trials])
    assert visited == tuple(np.maximum.accumulate([t.reference for t in result.trials]))
    assert all(v >= r for v, r in zip(visited, result.reference_so_far))
    assert visited[-1] <= reference.best


def test_the_search_figure_adds_reference_and_regret_panels_when_a_table_gives_them(full_space):
    sampler = make_sampler("random", 0).create()
    plain = run_search(full_space, CountingObjective(full_space), sampler, 6, create_study(None, None))
    with_ref = run_search(full_space, CountingObjective(full_space), make_sampler("random", 0).create(), 6,
                          create_study(None, None), _reference(full_space))
    one = _width(search_png(plain, label="count / random", ylabel="best count"))
    three = _width(search_png(with_ref, label="count / random", ylabel="best count"))
    assert three > 2.5 * one
    # the objective's optimum, when known, is drawn: the figure changes
    assert search_png(plain, label="c", ylabel="v", optimum=6.0) != search_png(plain, label="c", ylabel="v")


def test_an_oracle_search_on_a_table_logs_its_best_so_far_figure(tmp_path, nb201_csv):
    table_ref = f"reference={{name: nb201_table, path: {nb201_csv}, column: cifar10_test_200ep}}"
    sets = ["run.device=cpu", "sample.num_archs=3", "report.top_k=3", "space.channels=4", table_ref,
            f"run.cache_dir={tmp_path / 'cache'}", f"run.ledger=sqlite:///{tmp_path / 'ledger.db'}",
            f"run.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "run.name=tiny"]
    parser = argparse.ArgumentParser(prog="proxynas")
    add_search_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["search", str(QUICKSTART), "--row", "reference", "--sampler", "random", "--trials", "6",
            *[a for s in sets for a in ("--set", s)]]
    assert cmd_search(parser.parse_args(argv)) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("proxynas").experiment_id])
    path = client.download_artifacts(run.info.run_id, "best_so_far.png", str(tmp_path))
    png = open(path, "rb").read()
    assert len(png) > 10_000 and _width(png) > 1200  # objective, reference and regret panels
    assert run.data.metrics["regret"] >= 0.0
