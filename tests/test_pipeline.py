"""End to end on the embedded dataset, tiny settings: graph, cache, MLflow, ledger."""

import csv
import functools
import io
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from proxynas.cli import main
from proxynas.config import load_config
from proxynas.pipeline import build_graph

from tests.quickstart import QUICKSTART, TINY


@pytest.fixture()
def tiny(tmp_path):
    return TINY + [
        f"run.cache_dir={tmp_path / 'cache'}",
        f"run.ledger=sqlite:///{tmp_path / 'ledger.db'}",
        f"run.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "run.name=tiny",
    ]


def _args(overrides):
    out = []
    for o in overrides:
        out += ["--set", o]
    return out


def test_graph_has_a_branch_per_method_and_baseline():
    pipeline = build_graph(load_config(QUICKSTART))
    names = [s.name for s in pipeline.graph.order()]
    for m in ("dm", "random", "herding", "kcenter"):
        assert names.index(f"distill_{m}") < names.index(f"proxy_{m}") < names.index("report")
    assert "baseline_params" in names and "reference" in names
    assert names[-1] == "report"


def test_graph_rows_name_their_stages_and_outputs():
    from proxynas.errors import ConfigError

    pipeline = build_graph(load_config(QUICKSTART))
    graph = pipeline.graph
    assert [r.name for r in pipeline.rows] == ["dm", "random", "herding", "kcenter", "params"]
    dm = pipeline.row("dm")
    assert dm.distilled and graph.producer(dm.summary).name == dm.distill_stage
    assert graph.producer(dm.scores).name == dm.stage and dm.summary in graph.stage(dm.stage).inputs
    assert graph.producer(dm.distill_seconds).name == dm.distill_stage
    params = pipeline.row("params")
    assert not params.distilled and params.summary is None and graph.producer(params.scores).name == params.stage
    report_inputs = set(graph.stage("report").inputs)
    assert {r.scores for r in pipeline.rows} <= report_inputs and pipeline.reference in report_inputs
    with pytest.raises(ConfigError, match="no row 'dmm'; choose one of: dm, random"):
        pipeline.row("dmm")


def test_run_tracks_mlflow_and_ledger_and_reruns_from_cache(tiny, tmp_path, capsys):
    assert main(["run", str(QUICKSTART), *_args(tiny)]) == 0
    out = capsys.readouterr().out
    for row in ("dm", "random", "herding", "kcenter", "params"):
        assert f"\n{row} " in out
    assert "Spearman" in out and "reference: mean test accuracy" in out

    # MLflow: one parent run with the flattened config, nested stage runs, artifacts
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("proxynas")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["distill.ipc"] == "2"
    assert parent.data.params["distill.methods.dm.iterations"] == "3"
    assert -1.0 <= parent.data.metrics["dm.spearman"] <= 1.0
    assert "params.kendall" in parent.data.metrics
    children = {r.data.tags["proxynas.stage"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"load_data", "distill_dm", "proxy_dm", "reference", "report"} <= children
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "results.csv", "rank_table.csv", "proxy_vs_reference.png", "summary_dm.png", "summary_dm.pt"} <= artifacts
    local = client.download_artifacts(parent.info.run_id, "results.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(local).read_text())))
    assert len(rows) == 5 and {"arch", "reference", "dm", "params"} <= set(rows[0])

    # Optuna ledger: one study per proxy row, one trial per architecture
    study = optuna.load_study(study_name="tiny/dm", storage=f"sqlite:///{tmp_path / 'ledger.db'}")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 5
    assert {t.user_attrs["arch"] for t in trials} == {r["arch"] for r in rows}
    assert all(0 <= t.user_attrs["reference"] <= 100 for t in trials)
    assert all(t.user_attrs["proxy_seconds"] > 0 for t in trials)

    # Second run: everything cached, and the cache gives back the same results
    assert main(["run", str(QUICKSTART), *_args(tiny), "--no-mlflow"]) == 0
    again = capsys.readouterr()
    stages = build_graph(load_config(QUICKSTART, tiny)).graph.order()
    assert again.err.count(" cached") == len(stages) and "done in" not in again.err
    assert again.out.split("wall time")[0] == out.split("wall time")[0]  # the same rank table, digit for digit


def test_changing_one_setting_recomputes_only_its_branch(tiny, capsys):
    from proxynas.app import build_runner

    base = load_config(QUICKSTART, tiny)
    build_runner(base).run()
    changed = build_runner(load_config(QUICKSTART, tiny + ["distill.methods.dm.iterations=4"]))
    pending = {s.name for s in changed.status() if not s.cached}
    assert pending == {"distill_dm", "proxy_dm", "report"}


def test_stages_command_lists_cache_state(tiny, capsys):
    assert main(["stages", str(QUICKSTART), *_args(tiny)]) == 0
    out = capsys.readouterr().out
    assert "distill_dm" in out and "report" in out


def test_list_command_shows_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "cifar10", "imagefolder", "nb201", "dm", "herding", "kcenter", "random", "params", "train"):
        assert name in out


def test_cli_reports_config_errors_in_one_line(capsys):
    assert main(["run", str(QUICKSTART), "--set", "distill.ipc=zero"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: distill.ipc: expected an integer") and "\n" not in err


def test_expert_trajectories_are_their_own_cached_stage(tiny):
    from proxynas.app import build_runner

    mtt = (
        "distill.methods.mtt={iterations: 2, syn_steps: 2, expert_epochs: 1, max_start_epoch: 1, "
        "num_experts: 1, expert_train_epochs: 2, width: 16, depth: 2}"
    )
    base = load_config(QUICKSTART, tiny + [mtt])
    outputs = build_runner(base).run(targets=["distill_mtt"])
    assert outputs["summary_mtt"].method == "mtt"
    # the learned step size travels with the summary and is saved with its tensors
    learned = outputs["summary_mtt"].learned_lr
    assert learned > 0 and float(outputs["tensors_mtt"].tensors["learned_lr"]) == pytest.approx(learned)
    assert len(outputs["prepared_mtt"]) == 1  # one expert trajectory
    # a distillation setting re-distills from the cached experts...
    changed = build_runner(load_config(QUICKSTART, tiny + [mtt, "distill.methods.mtt.syn_steps=3"]))
    pending = {s.name for s in changed.status(targets=["distill_mtt"]) if not s.cached}
    assert pending == {"distill_mtt"}
    # ...an expert setting retrains them
    retrain = build_runner(load_config(QUICKSTART, tiny + [mtt, "distill.methods.mtt.expert_lr=0.02"]))
    pending = {s.name for s in retrain.status(targets=["distill_mtt"]) if not s.cached}
    assert pending == {"prepare_mtt", "distill_mtt"}


def test_jobs_runs_rows_in_processes_and_a_failed_row_keeps_the_others(tiny, tmp_path, capsys):
    from proxynas.app import build_runner

    bad = "baselines.broken={name: nb201_table, path: /nonexistent/nb201.csv.gz, column: cifar10_test_200ep}"
    assert main(["run", str(QUICKSTART), *_args(tiny + [bad]), "--jobs", "3"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 7 rows failed, first baseline_broken") and "nonexistent" in last
    logs = tmp_path / "logs" / "tiny"
    assert "proxy_dm done" in err and (logs / "proxy_dm.log").is_file() and (logs / "baseline_broken.log").is_file()
    # every other row was computed (in its own process) and cached
    pending = {s.name for s in build_runner(load_config(QUICKSTART, tiny + [bad])).status() if not s.cached}
    assert pending == {"baseline_broken", "report"}

    # without the broken row nothing is left to fan out: the tracked run loads every row from the cache
    assert main(["run", str(QUICKSTART), *_args(tiny), "--jobs", "3"]) == 0
    captured = capsys.readouterr()
    assert "[jobs]" not in captured.err and "\ndm " in captured.out
    assert "done in" not in captured.err.replace("report ... done in", "")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("proxynas").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and "dm.spearman" in parent[0].data.metrics


def test_only_runs_one_stage_and_its_upstream(tiny, capsys):
    from proxynas.app import build_runner

    assert main(["run", str(QUICKSTART), *_args(tiny), "--no-mlflow", "--only", "proxy_random"]) == 0
    assert "Spearman" not in capsys.readouterr().out
    cached = {s.name for s in build_runner(load_config(QUICKSTART, tiny)).status() if s.cached}
    assert cached == {"load_data", "sample_archs", "distill_random", "proxy_random"}
    assert main(["run", str(QUICKSTART), *_args(tiny), "--only", "proxy_randm"]) == 2
    assert "proxy_random" in capsys.readouterr().err  # the suggestion


def test_mtt_start_epoch_beyond_expert_training_fails_at_load():
    from proxynas.errors import ConfigError

    mtt = "distill.methods.mtt={expert_train_epochs: 5, max_start_epoch: 5, expert_epochs: 2}"
    with pytest.raises(ConfigError, match=r"distill\.methods\.mtt.*expert_train_epochs is 5"):
        load_config(QUICKSTART, [mtt])


@pytest.mark.parametrize(
    "plugin, recomputed",
    [
        ("DM", {"distill_dm", "proxy_dm", "report"}),
        ("TrainProxy", {"proxy_dm", "proxy_random", "proxy_herding", "proxy_kcenter", "reference", "report"}),
        ("ParamsProxy", {"baseline_params", "report"}),
        ("NB201Space", {"sample_archs", "proxy_dm", "proxy_random", "proxy_herding", "proxy_kcenter",
                        "baseline_params", "reference", "report"}),
    ],
)
def test_a_plugin_version_bump_recomputes_exactly_the_stages_that_use_it(tiny, monkeypatch, plugin, recomputed):
    import proxynas.distill
    import proxynas.proxies
    import proxynas.spaces
    from proxynas.app import build_runner

    config = load_config(QUICKSTART, tiny)
    build_runner(config).run()
    cls = next(getattr(m, plugin) for m in (proxynas.distill, proxynas.proxies, proxynas.spaces) if hasattr(m, plugin))
    monkeypatch.setattr(cls, "version", f"{cls.version}+1")  # a bump from whatever it is now
    pending = {s.name for s in build_runner(config).status() if not s.cached}
    assert pending == recomputed


def test_a_dataset_version_bump_recomputes_everything_that_reads_the_data(tiny, monkeypatch):
    from proxynas.app import build_runner
    from proxynas.data import Digits

    config = load_config(QUICKSTART, tiny)
    runner = build_runner(config)
    runner.run()
    monkeypatch.setattr(Digits, "version", "2")
    pending = {s.name for s in build_runner(config).status() if not s.cached}
    assert pending == {s.name for s in runner.graph.order()} - {"sample_archs"}


def test_the_ledger_is_filled_from_the_cache_when_it_lacks_the_run(tiny, tmp_path, capsys):
    from proxynas.app import build_runner, run_info, tracking_hooks
    from proxynas.ledger import LedgerHook

    def run(ledger_db):
        config = load_config(QUICKSTART, tiny + [f"run.ledger=sqlite:///{tmp_path / ledger_db}"])
        hooks = tracking_hooks(config, mlflow=False, console=False)
        build_runner(config, hooks).run(run_info=run_info(config, QUICKSTART))
        (hook,) = [h for h in hooks if isinstance(h, LedgerHook)]
        return hook.written

    rows = ["tiny/dm", "tiny/random", "tiny/herding", "tiny/kcenter", "tiny/params"]
    assert run("first.db") == rows
    assert run("first.db") == []  # the ledger holds this run already: nothing rewritten
    # a new ledger: every stage is cached, and the hook still records the run
    assert run("second.db") == rows
    first = optuna.load_study(study_name="tiny/dm", storage=f"sqlite:///{tmp_path / 'first.db'}")
    second = optuna.load_study(study_name="tiny/dm", storage=f"sqlite:///{tmp_path / 'second.db'}")
    assert [t.params for t in second.trials] == [t.params for t in first.trials]
    assert [t.value for t in second.trials] == [t.value for t in first.trials]


#: one training per arch reporting three values: three report rows from the one proxy_random stage
CURVE_ROWS = [
    "distill.methods={random: {}}",
    "proxy.epochs=4",
    "proxy.curve_every=2",
    "proxy.scores=[val_acc, sotl_2, 'val_acc@50%']",
]


def test_one_proxy_stage_feeds_a_row_per_named_score(tiny, tmp_path, capsys):
    from proxynas.app import build_runner
    from proxynas.search.objective import ProxyObjective

    overrides = tiny + CURVE_ROWS
    assert main(["run", str(QUICKSTART), *_args(overrides)]) == 0
    out = capsys.readouterr().out
    config = load_config(QUICKSTART, overrides)
    pipeline = build_graph(config)
    names = ["random", "random:sotl_2", "random:val_acc@50%"]
    assert [r.name for r in pipeline.rows] == [*names, "params"]
    assert [r.component for r in pipeline.rows] == [None, "sotl_2", "val_acc@50%", None]
    assert {r.stage for r in pipeline.rows[:3]} == {"proxy_random"}  # one stage, one training per arch
    assert [s.name for s in pipeline.graph.order() if s.name.startswith("proxy_")] == ["proxy_random"]
    for name in names:
        assert f"\n{name} " in out

    outputs = build_runner(config).run()  # everything cached
    results = {r["arch"]: r for r in outputs["results"].rows}
    assert [r["proxy"] for r in outputs["rank_table"].rows] == [*names, "params"]
    curves = outputs["curves_random"].rows
    assert set(curves[0]) == {"arch", "epoch", "steps", "train_loss", "val_loss", "val_acc"}
    for arch, result in results.items():
        curve = [c for c in curves if c["arch"] == arch]
        assert [c["epoch"] for c in curve] == [1, 2, 3, 4]
        assert result["random"] == curve[3]["val_acc"]
        assert result["random:sotl_2"] == pytest.approx(-(curve[2]["train_loss"] + curve[3]["train_loss"]))
        assert result["random:val_acc@50%"] == curve[1]["val_acc"] and curve[0]["val_acc"] is None
    assert len(outputs["curves_reference"].rows) == 5 * 1  # the reference trains too (1 epoch here)

    # tracked: a metric per row (MLflow-safe names) and the curves as artifacts
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("proxynas").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert {"random.spearman", "random:sotl_2.spearman", "random:val_acc_at_50pct.spearman"} <= set(parent.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"curves_random.csv", "curves_reference.csv"} <= artifacts
    local = client.download_artifacts(parent.info.run_id, "results.csv", str(tmp_path))
    assert set(names) <= set(next(csv.DictReader(io.StringIO(Path(local).read_text()))))
    # the ledger has a study per row, valued by that row
    study = optuna.load_study(study_name="tiny/random:sotl_2", storage=f"sqlite:///{tmp_path / 'ledger.db'}")
    assert sorted(t.value for t in study.trials) == sorted(r["random:sotl_2"] for r in results.values())

    # a search scores one arch by a component row's value, the same training as the pipeline's
    objective = ProxyObjective.from_pipeline(config, "random:sotl_2")
    arch = next(iter(results))
    assert objective.evaluate(arch).value == pytest.approx(results[arch]["random:sotl_2"], rel=1e-6)
    plain = ProxyObjective.from_pipeline(config, "random")
    assert plain.key != objective.key and plain.evaluate(arch).value == pytest.approx(results[arch]["random"])


def test_a_combined_row_aggregates_its_rows_by_log_rank(tiny):
    from proxynas.app import build_runner
    from proxynas.errors import ConfigError
    from proxynas.metrics.aggregation import log_rank_aggregate
    from proxynas.search.objective import ProxyObjective

    config = load_config(QUICKSTART, tiny + ["distill.methods={random: {}}",
                                             "combined={both: {rows: [random, params]}}"])
    outputs = build_runner(config).run()
    results = outputs["results"].rows
    expected = log_rank_aggregate({"random": [r["random"] for r in results], "params": [r["params"] for r in results]})
    assert [r["both"] for r in results] == pytest.approx(expected, abs=1e-12)
    both = next(r for r in outputs["report"]["rows"] if r["proxy"] == "both")
    assert both["kind"] == "combined" and -1.0 <= both["spearman"] <= 1.0
    assert [r["both_seconds"] for r in results] == pytest.approx(
        [r["random_seconds"] + r["params_seconds"] for r in results])
    with pytest.raises(ConfigError, match="combines rows by rank"):
        ProxyObjective.from_pipeline(config, "both")
    with pytest.raises(ConfigError, match=r"combined\.both: no row 'dmm' to combine; rows: random, params"):
        load_config(QUICKSTART, tiny + ["distill.methods={random: {}}", "combined={both: {rows: [dmm, params]}}"])
    with pytest.raises(ConfigError, match="at least two distinct rows"):
        load_config(QUICKSTART, tiny + ["combined={both: {rows: [params]}}"])


def test_the_configs_row_names_are_the_graphs_rows():
    for path in sorted(QUICKSTART.parent.glob("*.yaml")):
        config = load_config(path)
        rows = [r.name for r in build_graph(config).rows if r.kind != "combined"]
        assert config.row_names() == rows, path.name


def test_a_teacher_is_trained_once_and_relabels_every_listed_summary(tiny, monkeypatch):
    from proxynas import pipeline as pipeline_module
    from proxynas.app import build_runner
    from proxynas.engine.hooks import Hook

    teacher = ["teacher.relabel=[random, dm]", "teacher.epochs=1", "teacher.width=8", "teacher.depth=1"]
    config = load_config(QUICKSTART, tiny + ["distill.methods={random: {}, dm: {iterations: 2}}", *teacher])
    graph = build_graph(config)
    relabelled = {r.name: r for r in graph.rows if r.teacher}
    assert set(relabelled) == {"random+teacher", "dm+teacher"}
    assert relabelled["dm+teacher"].summary == "summary_dm" and relabelled["dm+teacher"].method == "dm"
    assert graph.graph.stage("proxy_dm-teacher").params["temperature"] == 4.0

    seen = []  # the teacher every relabelled proxy stage receives
    real_evaluate = pipeline_module.evaluate

    @functools.wraps(real_evaluate)  # the runner passes what the stage function's signature names
    def spying_evaluate(*args, teacher=None, **kwargs):
        seen.append(teacher)
        return real_evaluate(*args, teacher=teacher, **kwargs)

    monkeypatch.setattr(pipeline_module, "evaluate", spying_evaluate)
    graph = build_graph(config)  # rebuilt so its stages call the spy

    class Computed(Hook):
        names: list = []

        def before_stage(self, stage, key, cached):
            if not cached:
                Computed.names.append(stage.name)

    outputs = build_runner(config, [Computed()], pipeline=graph).run()
    assert Computed.names.count("teacher") == 1
    teachers = [t for t in seen if t is not None]
    assert len(teachers) == 2 and teachers[0] is teachers[1] is outputs["teacher"]
    rows = {r["proxy"]: r for r in outputs["report"]["rows"]}
    # the teacher's training is part of a relabelled row's cost, beside its summary's
    assert rows["dm+teacher"]["distill_seconds"] == pytest.approx(
        outputs["distill_seconds_dm"] + outputs["teacher_seconds"])
    # the temperature shapes the students, not the teacher: changing it reuses the teacher
    warmer = build_runner(load_config(QUICKSTART, tiny + ["distill.methods={random: {}, dm: {iterations: 2}}",
                                                          *teacher, "teacher.temperature=2"]))
    pending = {s.name for s in warmer.status() if not s.cached}
    assert pending == {"proxy_random-teacher", "proxy_dm-teacher", "report"}


def test_teacher_settings_are_checked_at_load(tiny):
    from proxynas.errors import ConfigError

    with pytest.raises(ConfigError, match="teacher.relabel names 'mtt', which is not in distill.methods"):
        load_config(QUICKSTART, tiny + ["teacher.relabel=[mtt]"])
    with pytest.raises(ConfigError, match="teacher.arch"):
        load_config(QUICKSTART, tiny + ["teacher.relabel=[dm]", "teacher.arch=|conv_9x9~0|"])
    with pytest.raises(ConfigError, match="temperature"):
        load_config(QUICKSTART, tiny + ["teacher.relabel=[dm]", "teacher.temperature=0"])
    no_teacher = build_graph(load_config(QUICKSTART, tiny))
    assert "teacher" not in {s.name for s in no_teacher.graph.stages}


def test_a_few_shot_row_is_fit_on_k_archs_and_scored_on_the_others_only(tiny):
    from proxynas.app import build_runner
    from proxynas.errors import ConfigError
    from proxynas.metrics.few_shot import few_shot_combination

    combined = "combined={fit: {rows: [random, params], method: few_shot, k: 4, seed: 1}}"
    config = load_config(QUICKSTART, tiny + ["sample.num_archs=10", "distill.methods={random: {}}", combined])
    outputs = build_runner(config).run()
    results = outputs["results"].rows
    expected = few_shot_combination({"random": [r["random"] for r in results], "params": [r["params"] for r in results]},
                                    [r["reference"] for r in results], k=4, seed=1)
    held = set(expected.held_out)
    assert [i for i, r in enumerate(results) if r["fit"] is not None] == sorted(held)
    assert [results[i]["fit"] for i in expected.held_out] == pytest.approx(expected.values)
    row = next(r for r in outputs["report"]["rows"] if r["proxy"] == "fit")
    assert row["num_archs"] == 6 and row["kind"] == "combined"
    (evaluations,) = [e for e in outputs["evaluations"] if e.row == "fit"]
    assert {r["arch"] for r in evaluations.records} == {results[i]["arch"] for i in held}
    with pytest.raises(ConfigError, match=r"combined\.fit\.k=8 leaves 2 .* fewer than report.top_k=3"):
        load_config(QUICKSTART, tiny + ["sample.num_archs=10", "distill.methods={random: {}}",
                                        combined.replace("k: 4", "k: 8")])


def test_a_distiller_matching_through_the_spaces_cells_is_given_the_space(tiny):
    from proxynas.app import build_runner

    overrides = tiny + ["distill.methods={dm_space: {name: dm, networks: space, iterations: 2}, dm: {iterations: 2}}"]
    config = load_config(QUICKSTART, overrides)
    graph = build_graph(config).graph
    assert graph.stage("distill_dm_space").params["space"] == config.space
    assert "space" not in graph.stage("distill_dm").params  # a ConvNet DM's key does not depend on the space
    outputs = build_runner(config).run(targets=["distill_dm_space"])
    assert outputs["summary_dm_space"].data.x.shape[0] == 2 * 10


def test_run_storage_scores_each_arch_as_a_trial_of_the_stages_study_with_the_local_results(tiny, tmp_path):
    from proxynas.app import build_runner
    from proxynas.distributed_scoring import ARCH_ATTR

    url = f"sqlite:///{tmp_path / 'scoring.db'}"
    local = build_runner(load_config(QUICKSTART, tiny)).run(targets=["proxy_random"])
    shared_config = load_config(QUICKSTART, [*tiny, f"run.cache_dir={tmp_path / 'other'}", f"run.storage={url}"])
    runner = build_runner(shared_config)
    shared = runner.run(targets=["proxy_random"])
    key = {s.name: s.key for s in runner.status()}["proxy_random"]
    assert [r["values"] for r in shared["scores_random"]] == [r["values"] for r in local["scores_random"]]
    trials = optuna.load_study(study_name=f"proxynas-{key}", storage=url).get_trials()
    assert sorted(t.user_attrs[ARCH_ATTR] for t in trials if t.state.name == "COMPLETE") == sorted(
        r["arch"] for r in local["scores_random"]
    )


def _reference_in_child(overrides, log, hang, out=None):
    """Run the reference stage with TrainProxy.score_values logging each arch it starts.

    With ``hang`` it hangs at the 4th arch, to be killed there. Runs in a
    spawned process: a forked one could deadlock on the parent's OpenMP
    threads, and the patch must not leak into the test process.
    """
    import time

    import torch

    from proxynas.app import build_runner
    from proxynas.proxies import training

    real = training.TrainProxy.score_values

    def counting(self, arch, ctx):
        with open(log, "a") as fh:
            fh.write(arch + "\n")
        if hang and log.read_text().count("\n") == 4:
            time.sleep(600)  # killed here, inside the stage
        return real(self, arch, ctx)

    training.TrainProxy.score_values = counting
    results = build_runner(load_config(QUICKSTART, overrides)).run(targets=["reference"])["reference"]
    if out is not None:
        torch.save(results, out)


def test_a_run_killed_inside_a_stage_resumes_with_only_the_unfinished_archs(tiny, tmp_path):
    import multiprocessing
    import os
    import signal
    import time

    import torch

    from proxynas.app import build_runner

    spawn = multiprocessing.get_context("spawn")
    overrides = tiny + ["run.workers=1"]
    log = tmp_path / "scored.log"
    child = spawn.Process(target=_reference_in_child, args=(overrides, log, True))
    child.start()
    deadline = time.monotonic() + 180
    while not (log.exists() and log.read_text().count("\n") == 4) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert log.read_text().count("\n") == 4  # three archs done, the fourth killed in flight
    log.unlink()

    rerun = spawn.Process(target=_reference_in_child, args=(overrides, log, False, tmp_path / "resumed.pt"))
    rerun.start()
    rerun.join(180)
    assert rerun.exitcode == 0
    assert log.read_text().count("\n") == 2  # only the killed arch and the one never started
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=False)
    clean = [*overrides, f"run.cache_dir={tmp_path / 'clean'}"]
    uninterrupted = build_runner(load_config(QUICKSTART, clean)).run(targets=["reference"])["reference"]
    assert [(r["arch"], r["value"], r["curve"]) for r in resumed] == [
        (r["arch"], r["value"], r["curve"]) for r in uninterrupted
    ]


def test_deterministic_kernels_are_switched_on_for_cuda_runs_only(tiny, monkeypatch):
    import os

    import torch

    from proxynas import app

    real = app.use_deterministic_kernels
    calls = []
    monkeypatch.setattr(app, "use_deterministic_kernels", lambda: calls.append("switched"))
    app.build_runner(load_config(QUICKSTART, tiny + ["run.deterministic=true"]))
    assert calls == []  # a CPU run is deterministic already (one thread per scoring)
    monkeypatch.setattr(app, "resolve_device", lambda name: torch.device("cuda"))
    app.build_runner(load_config(QUICKSTART, tiny + ["run.deterministic=true"]))
    assert calls == ["switched"]

    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda flag: calls.append(flag))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    real()
    assert calls[-1] is True and torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_a_distillation_killed_mid_way_resumes_from_its_checkpoint_to_the_same_summary(tiny, tmp_path, monkeypatch):
    import torch

    from proxynas import pipeline
    from proxynas.app import build_runner

    overrides = tiny + ["distill.methods.dm.iterations=6"]
    clean = build_runner(load_config(QUICKSTART, [*overrides, f"run.cache_dir={tmp_path / 'clean'}"]))
    expected = clean.run(targets=["distill_dm"])["summary_dm"]

    class Killed(BaseException):
        pass

    saved = []
    real_save = pipeline._TimedCheckpoint.save

    def save_then_die(self, iteration, state):
        real_save(self, iteration, state)
        saved.append(iteration)
        if iteration == 4:
            raise Killed

    monkeypatch.setattr(pipeline._TimedCheckpoint, "due", lambda self: True)
    monkeypatch.setattr(pipeline._TimedCheckpoint, "save", save_then_die)
    with pytest.raises(Killed):
        build_runner(load_config(QUICKSTART, overrides)).run(targets=["distill_dm"])
    monkeypatch.setattr(pipeline._TimedCheckpoint, "save", lambda self, i, s: saved.append(i) or real_save(self, i, s))
    resumed = build_runner(load_config(QUICKSTART, overrides)).run(targets=["distill_dm"])["summary_dm"]
    assert saved == [1, 2, 3, 4, 5]  # the rerun went on from iteration 5
    assert torch.equal(resumed.data.x, expected.data.x) and torch.equal(resumed.data.y, expected.data.y)
