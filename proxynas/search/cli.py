"""``proxynas search``: NAS search driven by one proxy row of a pipeline.

    proxynas search pipelines/quickstart.yaml --row dm --sampler tpe --trials 50 --seed 0

Only argparse is imported at module level: ``proxynas/cli.py`` builds this
sub-parser for every command (``proxynas list`` too), and the search itself
pulls in torch, Optuna and MLflow. The pipeline is assembled by
:mod:`proxynas.app`, as for ``proxynas run``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

SAMPLER_NAMES = ("random", "tpe", "nsga2", "evolution")


def add_search_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``search`` sub-command to ``proxynas``'s sub-parsers."""
    p = subparsers.add_parser(
        "search",
        help="search the space for the best architecture by one proxy row (an Optuna study)",
        description="Search the pipeline's space with a sampler, scoring archs with one row of the"
        " pipeline (a distiller's summary, a baseline, or 'reference' for an oracle search).",
    )
    p.add_argument("pipeline", help="pipeline YAML, e.g. pipelines/quickstart.yaml")
    p.add_argument("--row", default="dm",
                   help="pipeline row to search with: a distill method (or one of its learning-curve rows,"
                   " e.g. dm:sotl_5), a baseline, or 'reference' (default dm)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLER_NAMES, help="search strategy (default tpe)")
    p.add_argument("--trials", type=int, default=50, help="trials to run (default 50)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument(
        "--sampler-set",
        dest="sampler_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sampler setting, e.g. --sampler-set population_size=10 (repeatable)",
    )
    p.add_argument(
        "--cost",
        choices=("params", "seconds"),
        default="params",
        help="second objective of nsga2, minimised (default params)",
    )
    p.add_argument("--storage", help="Optuna storage URL of the study (default: run.ledger)")
    p.add_argument("--study", help="study name (default <run>/search/<row>/<sampler>/seed<seed>)")
    p.add_argument("--fresh", action="store_true", help="delete the study first instead of resuming it")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a pipeline setting, e.g. --set distill.ipc=10 (repeatable)",
    )
    p.add_argument("--cache-dir", help="stage cache folder (default: run.cache_dir)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: run.tracking_uri)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return p


def _settings(items: list[str]) -> dict[str, Any]:
    from proxynas.config.typed import apply_overrides

    return apply_overrides({}, items)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def _progress_printer(total: int, already: int):
    def show(record, result) -> None:
        done = record.number - already + 1
        if record.state == "PRUNED":
            what = "invalid arch (pruned)"
        elif record.state != "COMPLETE":
            what = record.state.lower()
        elif record.duplicate_of is not None:
            what = f"value {_fmt(record.value)} (duplicate of trial {record.duplicate_of})"
        else:
            what = f"value {_fmt(record.value)} in {record.seconds:.1f}s"
        print(f"[{done}/{total}] trial {record.number}: {what}; best {_fmt(result.best_value)}  {record.arch}",
              file=sys.stderr, flush=True)

    return show


def cmd_search(args) -> int:
    from proxynas.app import build_runner, load_pipeline
    from proxynas.config.pipeline import check_storage_url
    from proxynas.distributed import open_storage
    from proxynas.engine import ConsoleHook
    from proxynas.errors import ConfigError
    from proxynas.reference import NB201TableProxy, load_table
    from proxynas.search.objective import REFERENCE_ROW, ProxyObjective
    from proxynas.search.regret import Reference
    from proxynas.search.samplers import make_sampler
    from proxynas.search.search import create_study, run_search

    # Everything a user can get wrong is checked before the first stage runs (distilling takes minutes).
    config = load_pipeline(args.pipeline, args.overrides, cache_dir=args.cache_dir)
    factory = make_sampler(args.sampler, args.seed, _settings(args.sampler_settings))
    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1 (trials to run), got {args.trials}; e.g. --trials 50")
    storage = check_storage_url(args.storage or config.run.ledger, "--storage" if args.storage else "run.ledger")
    # heartbeats: several search processes may share this study; a killed one's trial is retried
    db = open_storage(storage)
    study_name = args.study or f"{config.run.name}/search/{args.row}/{args.sampler}/seed{args.seed}"

    # A table reference covers the whole space, so it defines regret; a trained
    # reference only scores the found arch (below). Read before distilling: a missing table fails fast.
    table_ref = isinstance(config.reference, NB201TableProxy)
    reference = (
        Reference.from_table(load_table(config.reference.path), config.reference.column) if table_ref else None
    )
    runner = build_runner(config, hooks=[ConsoleHook()])
    objective = ProxyObjective.from_pipeline(config, args.row, runner=runner)
    study = create_study(study_name, db, factory.directions, fresh=args.fresh)
    already = len(study.trials)
    start = time.perf_counter()
    result = run_search(
        config.space,
        objective,
        factory.create(),
        args.trials,
        study,
        reference,
        cost=args.cost,
        progress=_progress_printer(args.trials, already),
    )
    wall = time.perf_counter() - start
    if result.best_arch is None:
        from proxynas.errors import ProxynasError

        raise ProxynasError(f"no trial of study {study_name} completed; see the messages above")
    ref_value, ref_name = result.reference_value, config.reference.column if table_ref else REFERENCE_ROW
    if not table_ref:
        ref_value = ProxyObjective.from_pipeline(config, REFERENCE_ROW, runner=runner).evaluate(result.best_arch).value

    duplicates = sum(1 for t in result.trials if t.duplicate_of is not None)
    invalid = sum(1 for t in result.trials if t.state == "PRUNED")
    print(f"found arch      {result.best_arch}")
    print(f"proxy value     {args.row} = {_fmt(result.best_value)}")
    if table_ref:
        print(f"reference value {ref_name} = {_fmt(ref_value)} (best in space {_fmt(result.reference_best)})")
        print(f"regret          {_fmt(result.regret)}")
    else:
        print(f"reference value {ref_name} = {_fmt(ref_value)}")
        print("regret          n/a (the reference is not a table of the whole space)")
    print(
        f"search cost     {result.search_seconds:.1f} s scoring {result.n_evaluated} archs over"
        f" {result.n_trials} trials ({duplicates} duplicates, {invalid} invalid)"
        f" + {result.setup_seconds:.1f} s distillation; wall {wall:.1f} s"
    )
    print(f"study           {study_name} in {storage}")
    if not args.no_mlflow:
        # an oracle search on a table maximises the table itself, so its optimum is the table's best
        optimum = result.reference_best if args.row == REFERENCE_ROW else None
        run_id = _log_mlflow(args, config, factory, study_name, storage, result, ref_value, optimum)
        print(f"mlflow run      {run_id}")
    return 0


def _log_mlflow(args, config, factory, study_name, storage, result, ref_value, optimum=None) -> str:
    from dataclasses import asdict

    from proxynas.artifacts import Figure, Table
    from proxynas.config import to_dict
    from proxynas.search.plots import search_png
    from proxynas.search.search import trials_table
    from proxynas.tracking import MLflowHook

    tracker = MLflowHook(args.tracking_uri or config.run.tracking_uri, config.run.experiment)
    run_id = tracker.start_run(
        f"search {args.row} {args.sampler} seed{args.seed}",
        tags={"proxynas.pipeline": str(args.pipeline), "proxynas.kind": "search", "proxynas.study": study_name},
    )
    search = {
        "row": args.row,
        "sampler": args.sampler,
        "sampler_settings": asdict(factory),
        "trials": args.trials,
        "seed": args.seed,
        "cost": args.cost,
        "study": study_name,
        "storage": storage,
    }
    tracker.log_params(run_id, {**to_dict(config), "search": search})
    tracker.log_metrics(
        run_id,
        {
            "best_value": result.best_value,
            "reference_value": ref_value if ref_value is not None else math.nan,
            "regret": result.regret if result.regret is not None else math.nan,
            "search_seconds": result.search_seconds,
            "setup_seconds": result.setup_seconds,
            "n_trials": result.n_trials,
            "n_evaluated": result.n_evaluated,
        },
    )
    tracker.log_history(run_id, "best_so_far", result.best_so_far)
    tracker.log_history(run_id, "regret_so_far", result.regret_so_far or ())
    png = search_png(result, label=f"{args.row} / {args.sampler}", ylabel=f"best {args.row} value", optimum=optimum)
    tracker.log_output(run_id, Figure("best_so_far", png))
    tracker.log_output(run_id, Table("search_trials", trials_table(result)))
    tracker.end_run(run_id)
    return run_id
