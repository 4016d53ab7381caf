"""``proxynas`` command line: run a pipeline, show its stages, list plugins, open the UIs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from proxynas.errors import ConfigError, ProxynasError
from proxynas.pipeline_file import check_pipeline_file


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ...``, exit 2) like every other proxynas error."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(f"{message}; see `{self.prog} --help`")


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", help="pipeline YAML, e.g. pipelines/quickstart.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set distill.ipc=10 (repeatable)",
    )
    p.add_argument("--cache-dir", help="stage cache folder (default: run.cache_dir)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="proxynas", description="Rank NAS architectures with dataset-distillation proxies."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline (cached stages are reused)")
    _add_pipeline_args(run)
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: run.tracking_uri)")
    run.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="run up to N proxy rows side by side, each in its own process sharing the cache "
                     "(for a GPU, whose small-network training is launch-bound; default 1)")
    run.add_argument("--only", action="append", default=[], metavar="STAGE",
                     help="run only this stage and what it needs (repeatable); no report unless it is one")
    stages = sub.add_parser("stages", help="print the stage graph and which stages are cached")
    _add_pipeline_args(stages)
    config = sub.add_parser("config", help="print the fully resolved config")
    _add_pipeline_args(config)
    sub.add_parser("list", help="list registered datasets, search spaces, distillers and proxies")
    nb201 = sub.add_parser("nb201", help="NAS-Bench-201 benchmark files").add_subparsers(dest="nb201", required=True)
    export = nb201.add_parser("export", help="write the compact results CSV from an official benchmark file")
    export.add_argument("official", help="NAS-Bench-201-v1_*.pth, or a NATS-tss-v1_0-3ffb9-simple folder")
    export.add_argument("out", help="output CSV (gzipped if it ends in .gz)")
    for name, help_text in (
        ("tune", "tune a row's settings for rank preservation (Kendall tau), then score them on held-out archs"),
        ("worker", "join a tuning study and run its trials (start any number, on any machines)"),
    ):
        p = sub.add_parser(name, help=help_text)
        _add_pipeline_args(p)
        p.add_argument("--storage", help="Optuna storage URL shared by workers (default: run.ledger), "
                       "e.g. postgresql://user@host/db")
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: run.tracking_uri)")
        p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    from proxynas.search.cli import add_search_parser

    add_search_parser(sub)
    ui = sub.add_parser("ui", help="open the MLflow UI on the runs' store (--optuna: optuna-dashboard on the ledger)",
                        description="Start a UI server on the project's stores, print the page to open, "
                        "and keep it running until Ctrl-C.")
    ui.add_argument("--tracking-uri", metavar="URI",
                    help="MLflow store to show (default: run.tracking_uri's default, sqlite:///mlruns/mlflow.db)")
    ui.add_argument("--experiment", metavar="NAME",
                    help="experiment whose runs table to open (default: run.experiment's, proxynas)")
    ui.add_argument("--host", default="127.0.0.1", metavar="H",
                    help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    ui.add_argument("--port", type=int, metavar="N", help="port to listen on (default 5000; 8080 with --optuna)")
    ui.add_argument("--optuna", action="store_true",
                    help="open optuna-dashboard on the Optuna storage instead (ledger, search and tuning studies; "
                    "pip install 'proxynas[ui]')")
    ui.add_argument("--storage", metavar="URL",
                    help="Optuna storage URL for --optuna "
                    "(default: run.ledger's default, sqlite:///.proxynas/ledger.db)")
    return parser


def _load(args):
    from proxynas.app import load_pipeline

    return load_pipeline(args.pipeline, args.overrides, cache_dir=args.cache_dir)


def cmd_run(args) -> int:
    from proxynas.app import build_runner, run_info, tracking_hooks
    from proxynas.engine import Cache, ConsoleHook
    from proxynas.pipeline import build_graph, random_subset_rows
    from proxynas.report import format_report

    if args.jobs < 1:
        raise ConfigError(
            f"--jobs must be >= 1 (rows run side by side), got {args.jobs}; use --jobs 1 to run them one after another"
        )
    config = _load(args)
    if config.run.storage:  # its driver and file, before any stage runs (the scoring stages open it)
        from proxynas.config.pipeline import check_storage_url

        check_storage_url(config.run.storage, "run.storage")
    Cache(config.run.cache_dir).check_writable()  # before the tracking stores are opened, and any stage
    hooks = tracking_hooks(config, tracking_uri=args.tracking_uri, mlflow=not args.no_mlflow)
    pipeline = build_graph(config)
    runner = build_runner(config, hooks, pipeline=pipeline)
    start = time.perf_counter()
    if args.only:
        for name in args.only:
            runner.graph.stage(name)  # an unknown name fails here, with suggestions
        if "report" not in args.only:
            build_runner(config, [ConsoleHook()]).run(targets=args.only)
            print(f"wall time {time.perf_counter() - start:.1f} s (device {runner.resources['device']})")
            return 0
    if args.jobs > 1:
        _run_rows_in_processes(args, config)
    outputs = runner.run(targets=args.only or None, run_info=run_info(config, args.pipeline))
    print(format_report(outputs["report"], random_rows=random_subset_rows(config, pipeline)))
    print(f"wall time {time.perf_counter() - start:.1f} s (device {runner.resources['device']})")
    return 0


def _run_rows_in_processes(args, config) -> None:
    """Compute the pending rows of ``config`` in ``args.jobs`` processes (``proxynas run --only ROW``).

    Stages several rows need run here first; afterwards every row is cached
    and the caller's normal, tracked run only loads them.
    """
    from proxynas.app import build_runner
    from proxynas.engine import ConsoleHook, parallel
    from proxynas.errors import PipelineError
    from proxynas.evaluation import default_workers

    runner = build_runner(config, [ConsoleHook()])
    pending = [s.name for s in runner.status() if not s.cached]
    plan = parallel.plan_fan_out(runner.graph, pending, sink="report")
    if len(plan.branches) < 2:
        return
    if plan.shared:
        runner.run(targets=plan.shared)
    device = runner.resources["device"]
    # a CPU's cores are shared out between the rows; a GPU row uses one process anyway
    workers = max(1, (config.run.workers or default_workers(device)) // args.jobs)
    base = [sys.executable, "-m", "proxynas", "run", str(args.pipeline), "--no-mlflow"]
    for override in [*args.overrides, f"run.cache_dir={config.run.cache_dir}", f"run.workers={workers}"]:
        base += ["--set", override]
    log_dir = Path(config.run.cache_dir).parent / "logs" / config.run.name
    print(f"[jobs] {len(plan.branches)} rows, {args.jobs} at a time; logs in {log_dir}", file=sys.stderr)
    results = parallel.run_branches(plan.branches, lambda name: [*base, "--only", name],
                                    jobs=args.jobs, log_dir=log_dir)
    failed = [r for r in results if not r.ok]
    if failed:
        first = failed[0]
        raise PipelineError(
            f"{len(failed)} of {len(results)} rows failed, first {first.name} (exit {first.returncode}):"
            f" {first.last_line()} -- full log {first.log}; the finished rows are cached, so running the"
            " same command again redoes only the failed ones"
        )


def cmd_stages(args) -> int:
    from proxynas.app import build_runner

    print(build_runner(_load(args)).format_status())
    return 0


def cmd_config(args) -> int:
    from proxynas.config import dump_config

    print(dump_config(_load(args)), end="")
    return 0


def cmd_list(args) -> int:
    from proxynas.config.pipeline import DATASETS, DISTILLERS, PROXIES, SEARCH_SPACES

    for title, registry in (
        ("datasets", DATASETS),
        ("search spaces", SEARCH_SPACES),
        ("distillers", DISTILLERS),
        ("proxies", PROXIES),
    ):
        print(f"{title}:")
        for name in registry.names():
            doc = (registry.get(name).__doc__ or "").strip().splitlines()
            print(f"  {name:<12} {doc[0] if doc else ''}")
    return 0


def cmd_nb201(args) -> int:
    from proxynas.reference import NB201Table, export_csv

    table = NB201Table.from_official(args.official)
    out = export_csv(table, args.out)
    print(f"wrote {len(table)} architectures x {len(table.columns)} columns to {out}")
    return 0


def cmd_tune(args, *, finish: bool = True) -> int:
    from proxynas.config.pipeline import check_storage_url
    from proxynas.tune import Tuner, format_result

    overrides = list(args.overrides) + ([f"run.cache_dir={args.cache_dir}"] if args.cache_dir else [])
    tuner = Tuner(args.pipeline, overrides)  # loads and checks the config; nothing expensive yet
    config = tuner.config
    storage = check_storage_url(args.storage or config.run.ledger, "--storage" if args.storage else "run.ledger")
    study = tuner.open(storage)  # before the reference is computed and any trial runs
    callbacks = []
    if not args.no_mlflow:
        from proxynas.config.typed import to_dict
        from proxynas.tracking import MLflowTrialCallback

        callbacks.append(
            MLflowTrialCallback(
                args.tracking_uri or config.run.tracking_uri,
                config.run.experiment,
                f"{'tune' if finish else 'worker'} {tuner.study_name}",
                params=to_dict(config),
            )
        )
    start = time.perf_counter()
    done = tuner.work(study, callbacks)
    print(f"this worker finished {done} trials of {tuner.study_name} in {time.perf_counter() - start:.1f} s")
    if finish:
        result = tuner.finish(study)
        print(format_result(result))
        if callbacks:
            callbacks[0].finish({"calibration_tau": result.calibration_tau, "holdout_tau": result.holdout_tau,
                                 "holdout_spearman": result.holdout_spearman,
                                 "default_holdout_tau": result.default_holdout_tau})
    elif callbacks:
        callbacks[0].finish({"trials_finished": done})
    return 0


def cmd_worker(args) -> int:
    return cmd_tune(args, finish=False)


def cmd_search(args) -> int:
    from proxynas.search.cli import cmd_search as run_search

    return run_search(args)


def cmd_ui(args) -> int:
    from proxynas.config.pipeline import RunConfig
    from proxynas.ui import MLFLOW_PORT, OPTUNA_PORT, mlflow_ui, optuna_ui

    defaults = RunConfig()
    if args.optuna:
        if args.tracking_uri or args.experiment:
            raise ConfigError("--tracking-uri and --experiment name the MLflow store, which --optuna does not "
                              "open; drop them, or pass the Optuna storage with --storage")
        return optuna_ui(args.storage or defaults.ledger, host=args.host,
                         port=OPTUNA_PORT if args.port is None else args.port)
    if args.storage:
        raise ConfigError("--storage is the Optuna storage that --optuna opens; add --optuna, "
                          "or name the MLflow store with --tracking-uri")
    return mlflow_ui(args.tracking_uri or defaults.tracking_uri, args.experiment or defaults.experiment,
                     host=args.host, port=MLFLOW_PORT if args.port is None else args.port)


COMMANDS = {"ui": cmd_ui, "tune": cmd_tune, "worker": cmd_worker, "search": cmd_search, "run": cmd_run, "stages": cmd_stages, "config": cmd_config, "list": cmd_list, "nb201": cmd_nb201}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)  # a usage error is a ConfigError (see _Parser)
        if getattr(args, "pipeline", None) is not None:
            check_pipeline_file(args.pipeline)  # before the commands import torch and the plugins
        return COMMANDS[args.command](args)
    except ProxynasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed stages are cached; run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
