"""``proxynas search`` end to end on the embedded digits pipeline at toy size (seconds)."""

from __future__ import annotations

import argparse

import optuna
import pytest
from mlflow.tracking import MlflowClient

from proxynas.app import build_runner
from proxynas.config import load_config
from proxynas.errors import ConfigError
from proxynas.search import ProxyObjective, add_search_parser, cmd_search

from tests.quickstart import QUICKSTART
TINY = [
    "run.device=cpu",
    "run.workers=1",
    "sample.num_archs=3",
    "report.top_k=3",
    "distill.ipc=2",
    "proxy.epochs=1",
    "reference.epochs=1",
    "space.channels=4",
]


@pytest.fixture()
def tiny(tmp_path):
    return TINY + [
        f"run.cache_dir={tmp_path / 'cache'}",
        f"run.ledger=sqlite:///{tmp_path / 'ledger.db'}",
        f"run.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "run.name=tiny",
    ]


def search(argv) -> int:
    """``proxynas search ...`` through this package's own sub-parser (as proxynas.cli wires it)."""
    parser = argparse.ArgumentParser(prog="proxynas")
    add_search_parser(parser.add_subparsers(dest="command", required=True))
    return cmd_search(parser.parse_args(["search", *argv]))


def _sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def test_search_writes_a_study_logs_mlflow_and_resumes_from_the_cache(tiny, tmp_path, capsys):
    argv = [str(QUICKSTART), "--row", "random", "--sampler", "evolution", "--seed", "0",
            "--sampler-set", "population_size=3", "--sampler-set", "sample_size=2", *_sets(tiny)]
    assert search([*argv, "--trials", "6"]) == 0
    out, err = capsys.readouterr()
    assert "found arch      |" in out and "proxy value     random = " in out
    assert "regret          n/a" in out  # the digits reference is trained, not a table of the space
    assert "[6/6] trial 5:" in err and "distill_random ... done" in err

    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    study = optuna.load_study(study_name="tiny/search/random/evolution/seed0", storage=ledger)
    assert len(study.trials) == 6
    assert all(t.user_attrs["arch"].startswith("|") and "seconds" in t.user_attrs for t in study.trials)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("proxynas").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["proxynas.kind"] == "search"
    assert run.data.params["search.sampler"] == "evolution" and run.data.params["distill.ipc"] == "2"
    assert run.data.params["search.sampler_settings.population_size"] == "3"
    assert run.data.metrics["n_trials"] == 6 and "best_value" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "best_so_far")) == 6
    assert {"best_so_far.png", "search_trials.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

    # the same command resumes the study; the summary comes from the stage cache
    assert search([*argv, "--trials", "2", "--no-mlflow"]) == 0
    err = capsys.readouterr().err
    assert "distill_random ... cached" in err and "[2/2] trial 7:" in err
    assert len(optuna.load_study(study_name="tiny/search/random/evolution/seed0", storage=ledger).trials) == 8


def test_search_against_a_benchmark_table_reports_regret(tiny, nb201_csv, capsys):
    table_ref = f"reference={{name: nb201_table, path: {nb201_csv}, column: cifar10_test_200ep}}"
    argv = [str(QUICKSTART), "--row", "params", "--sampler", "nsga2", "--sampler-set", "population_size=4",
            "--trials", "8", "--no-mlflow", *_sets([*tiny, table_ref])]
    assert search(argv) == 0
    out = capsys.readouterr().out
    assert "reference value cifar10_test_200ep = " in out and "(best in space 94.37)" in out
    regret = float(out.split("regret          ")[1].split()[0])
    assert 0.0 <= regret < 94.37


def test_proxy_objective_scores_exactly_like_the_pipeline_row(tiny):
    # two workers: the pipeline scores in forked one-thread processes, as the objective does
    config = load_config(QUICKSTART, [*tiny, "run.workers=2"])
    runner = build_runner(config)
    outputs = runner.run(targets=["proxy_random"])
    objective = ProxyObjective.from_pipeline(config, "random", runner=runner)
    arch, expected = outputs["archs"][0], outputs["scores_random"][0]["value"]
    assert objective.evaluate(arch).value == expected
    assert objective.summary is not None and objective.setup_seconds > 0
    with pytest.raises(ConfigError, match="has no row 'mtt'; choose one of: dm, random, herding, kcenter, params"):
        ProxyObjective.from_pipeline(config, "mtt", runner=runner)


def test_a_relabelled_rows_objective_trains_with_the_pipelines_teacher(tiny):
    teacher = ["teacher.relabel=[random]", "teacher.epochs=1", "teacher.width=8", "teacher.depth=1"]
    # scored by the training loss, which the teacher's labels change whatever the accuracy
    config = load_config(QUICKSTART, [*tiny, "run.workers=2", "proxy.scores=[sotl_1]", *teacher])
    runner = build_runner(config)
    outputs = runner.run(targets=["proxy_random-teacher"])
    objective = ProxyObjective.from_pipeline(config, "random+teacher", runner=runner)
    assert objective.teacher.seconds == outputs["teacher"].seconds  # the pipeline's teacher, from its cache
    assert objective.setup_seconds == pytest.approx(outputs["distill_seconds_random"] + outputs["teacher_seconds"])
    arch = outputs["archs"][0]
    assert objective.evaluate(arch).value == outputs["scores_random-teacher"][0]["value"]
    # without the teacher the same summary trains to another value
    plain = ProxyObjective.from_pipeline(config, "random", runner=runner)
    assert plain.teacher is None and plain.evaluate(arch).value != objective.evaluate(arch).value
