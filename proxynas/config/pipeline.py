"""The pipeline config: typed, frozen, validated at load, overridable from the CLI.

A pipeline YAML has the sections below; every section has defaults (those of
``pipelines/quickstart.yaml``) so a file only states what it changes. Plugin
sections (``data``, ``space``, ``proxy``, ``reference``, entries of
``distill.methods`` and ``baselines``) pick an implementation by registered
name and validate its settings against that implementation's fields.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from proxynas.config.typed import (
    Checked,
    apply_overrides,
    checked,
    from_dict,
    load_yaml,
    register_plugin_base,
    to_dict,
    yaml_error_message,
)
from proxynas.data import DATASETS, DatasetSource
from proxynas.data.digits import Digits
from proxynas.data.zca import ZCA
from proxynas.distill import DISTILLERS, Distiller
from proxynas.distill.dm import DM
from proxynas.distill.herding import Herding
from proxynas.distill.kcenter import KCenter
from proxynas.distill.random import RandomCoreset
from proxynas.errors import ConfigError
from proxynas.pipeline_file import check_pipeline_file
from proxynas.proxies import PROXIES, ParamsProxy, Proxy, TrainProxy
from proxynas.reference import NB201TableProxy  # noqa: F401  (registers the "nb201_table" proxy)
from proxynas.spaces import SEARCH_SPACES, NB201Space, SearchSpace
from proxynas.teacher import CONVNET, TeacherConfig, relabelled_row

for _base, _registry in (
    (DatasetSource, DATASETS),
    (SearchSpace, SEARCH_SPACES),
    (Distiller, DISTILLERS),
    (Proxy, PROXIES),
):
    register_plugin_base(_base, _registry)


@dataclass(frozen=True)
class RunConfig(Checked):
    """Where and how the pipeline runs (not part of any stage's cache key)."""

    name: str = "pipeline"
    device: str = "auto"
    cache_dir: str = ".proxynas/cache"
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    experiment: str = "proxynas"
    ledger: str = "sqlite:///.proxynas/ledger.db"
    #: processes that train architectures in parallel on a CPU; None = one per core
    workers: int | None = checked(None, ge=1)
    #: a database URL (``sqlite:///path.db``, ``postgresql://user@host/db``) through which
    #: every process running this pipeline shares the archs of each scoring stage, one
    #: Optuna trial per arch (:mod:`proxynas.distributed_scoring`); empty = score locally
    storage: str = ""
    #: on CUDA, use only deterministic kernels (``torch.use_deterministic_algorithms``,
    #: no cuDNN autotuning): slower, and the same numbers on every run of one machine
    deterministic: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("ledger", "storage"):
            url = getattr(self, key)
            problem = database_url_problem(url) if url or key == "ledger" else None
            if problem:
                raise ValueError(f"{key} {problem}")


#: database schemes whose SQLAlchemy dialect ships with SQLAlchemy (no import needed to accept them)
_KNOWN_DATABASES = frozenset({"sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql"})
_DATABASE_EXAMPLES = "use sqlite:///path.db (one machine) or postgresql://user@host/db (several)"


#: driver module -> the pip package that provides it
_DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient",
                    "pymysql": "PyMySQL", "mariadb": "mariadb", "oracledb": "oracledb", "pyodbc": "pyodbc"}


def _shown(url: str) -> str:
    """``url`` for a message, its password (``user:secret@``) masked."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def database_url_problem(url: str) -> str | None:
    """Why ``url`` is not a database URL that Optuna's RDB storage can open, or None.

    Cheap: it parses the URL and, for a scheme other than the usual ones, asks
    SQLAlchemy for its dialect; it neither connects nor touches the file system
    (see :func:`check_storage_url` for that).
    """
    scheme, sep, _ = url.partition("://") if isinstance(url, str) else ("", "", "")
    if not sep or not scheme:
        return f"{_shown(str(url))!r} is not a database URL; {_DATABASE_EXAMPLES}"
    database = scheme.split("+", 1)[0]
    if database in _KNOWN_DATABASES:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except NoSuchModuleError:  # (a subclass of ArgumentError)
        hint = "write postgresql://, not postgres://; " if database == "postgres" else ""
        return f"{_shown(url)!r} names an unknown database {database!r}; {hint}{_DATABASE_EXAMPLES}"
    except ArgumentError:
        return f"{_shown(url)!r} is not a database URL; {_DATABASE_EXAMPLES}"
    return None


def check_storage_url(url: str, setting: str) -> str:
    """ConfigError (naming ``setting``) unless the Optuna storage ``url`` can be opened; returns ``url``.

    Run before any expensive work: the URL's form and database (as
    :func:`database_url_problem`), that its driver package is installed, and for
    ``sqlite:///path.db`` that the file can be created or written. It does not
    connect to a database server.
    """
    problem = database_url_problem(url)
    if problem:
        raise ConfigError(f"{setting} {problem}")
    from sqlalchemy.engine import make_url

    from proxynas.storage import sqlite_path

    dialect = make_url(url).get_dialect()
    try:
        import_dbapi = getattr(dialect, "import_dbapi", None) or dialect.dbapi  # SQLAlchemy 2 / 1.4
        import_dbapi()
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "its driver")
        raise ConfigError(
            f"{setting} {_shown(url)}: the {url.split('://')[0]}:// database needs the Python module"
            f" {module or '?'!r}, which is not installed; pip install '{package}'"
        ) from None
    path = sqlite_path(url)
    if path is None:
        return url
    if path.is_dir():
        raise ConfigError(f"{setting} {url}: {path} is a folder; name a database file in it,"
                          f" e.g. sqlite:///{path / 'proxynas.db'}")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"{setting} {url}: the database file {path} is not writable;"
                              " fix its permissions or choose another path")
        return url
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{setting} {url}: cannot create the folder {path.parent} because {existing}"
                          " is a file; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting} {url}: cannot create {path} because the folder {existing} is not"
                          " writable; choose a writable path")
    return url


@dataclass(frozen=True)
class SampleConfig(Checked):
    """Which candidate architectures are drawn from the search space.

    ``uniform``: uniformly from the space. ``stratified``: ``num_archs / bins``
    from each quantile bin of ``column`` in the benchmark ``table`` (so the top
    of the space is represented; see :mod:`proxynas.sampling`). ``top``:
    uniformly from the best ``fraction`` of the space by ``column`` (whether a
    proxy orders the good architectures; a fidelity benchmark's second sample). An empty
    ``table`` is the NAS-Bench-201 table shipped with proxynas
    (:func:`proxynas.reference.default_table_path`).
    """

    num_archs: int = 20
    seed: int = 0
    strategy: Literal["uniform", "stratified", "top"] = "uniform"
    table: str = ""
    column: str = "cifar10_test_200ep"
    bins: int = 5
    #: for ``top``: the share of the space (by ``column``) to draw from
    fraction: float = checked(0.1, gt=0, le=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_archs < 3:
            raise ValueError("num_archs must be >= 3 (rank correlations need at least 3 archs)")
        if self.strategy in ("stratified", "top") and self.table.strip() and not Path(self.table).exists():
            raise ValueError(
                f"table {self.table} (the benchmark table of sample.strategy={self.strategy}) not found;"
                " point sample.table at an nb201_results.csv.gz (see `proxynas nb201 export`) or an official"
                " NAS-Bench-201-v1_*.pth / NATS-tss-v1_0-3ffb9-simple file, or leave it empty for the table"
                " shipped with proxynas"
            )


def _default_methods() -> dict[str, Distiller]:
    return {"dm": DM(iterations=200), "random": RandomCoreset(), "herding": Herding(), "kcenter": KCenter()}


@dataclass(frozen=True)
class DistillConfig(Checked):
    """The summaries to build: every method makes ``ipc`` images per class."""

    ipc: int = checked(10, ge=1)
    seed: int = 0
    methods: dict[str, Distiller] = field(default_factory=_default_methods)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.methods:
            raise ValueError("methods must name at least one distiller")


@dataclass(frozen=True)
class ReportConfig(Checked):
    """Rank-preservation metrics."""

    top_k: int = checked(5, ge=3)  # the top-k Spearman needs 3 points
    bootstrap: int = checked(1000, ge=0)
    ci: float = checked(0.95, gt=0, lt=1)
    seed: int = 0


@dataclass(frozen=True)
class TuneParam:
    """One tuned setting: a range (``low``/``high``, ``log``, ``integer``) or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty choices list or low/high, not both")
            return
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"needs low < high (got low={self.low}, high={self.high}) or a choices list")
        if self.log and self.low <= 0:
            raise ValueError("log ranges need low > 0")


#: config sections a tuning trial cannot change, and why
_UNTUNABLE = {
    "tune": "it configures the tuning itself",
    "run": "it says where the pipeline runs, not what it computes",
    "sample": "the calibration and held-out archs are drawn by tune.seed",
    "report": "it does not change the proxy",
    "reference": "the reference is computed once and every trial is ranked against it",
    "data": "the dataset is loaded once; a trial that changed it would rank against another reference",
    "zca": "the dataset is whitened once; a trial that changed it would rank against another reference",
    "space": "the calibration and held-out archs are drawn from the space once",
}


@dataclass(frozen=True)
class TuneConfig:
    """``proxynas tune``: which row's settings to tune for rank preservation, and on what archs.

    ``params`` maps a config key (as for ``--set``) to its range. Kendall tau is
    measured on ``calibration`` archs and the best settings are scored once on
    ``holdout`` other archs that tuning never saw; both sets are drawn from the
    space with ``seed``. Trials report tau every ``report_every`` archs so the
    median pruner can stop unpromising settings early.
    """

    row: str = "dm"
    trials: int = 20
    calibration: int = 10
    holdout: int = 10
    seed: int = 0
    sampler: Literal["tpe", "random"] = "tpe"
    report_every: int = 5
    params: dict[str, TuneParam] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("trials", "calibration", "holdout", "report_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1")
        if self.calibration < 3 or self.holdout < 3:
            raise ValueError("calibration and holdout need at least 3 archs each for a rank correlation")
        for key in self.params:
            section = key.split(".")[0]
            if section in _UNTUNABLE:
                raise ValueError(f"params: {key!r} cannot be tuned ({_UNTUNABLE[section]}); tune proxy.*,"
                                 " distill.* or baselines.* settings")


@dataclass(frozen=True)
class CombinedRow(Checked):
    """A report row that combines other rows' scores by rank.

    ``log_rank`` (unsupervised): each arch scores ``sum over rows of log(rank
    / N)`` among the N sampled archs (AZ-NAS's aggregation, Lee & Ham, CVPR
    2024, Eq. 12), e.g. a summary's SoTL row with the zero-cost rows.
    ``few_shot``: a monotone model of the rows' ranks fit on ``k`` archs whose
    reference is known (a seeded draw with ``seed``), scored on the other
    N - k only (:mod:`proxynas.metrics.few_shot`). Either value depends on the
    whole sample, so such a row is reported, not searched or tuned.
    """

    rows: list[str] = field(default_factory=list)
    method: Literal["log_rank", "few_shot"] = "log_rank"
    k: int = checked(20, ge=2)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.rows) < 2 or len(set(self.rows)) != len(self.rows):
            raise ValueError(f"rows must name at least two distinct rows to combine, got {self.rows}")


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline: dataset -> summaries -> proxies vs reference -> report."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DatasetSource = field(default_factory=Digits)
    #: ZCA whitening of every split, fitted on the training split (``zca: {}`` for MTT's settings,
    #: see :class:`~proxynas.data.zca.ZCA`); the summaries, proxies and reference then all live in the
    #: whitened space. None (the default) leaves the normalised images as they are
    zca: ZCA | None = None
    space: SearchSpace = field(default_factory=lambda: NB201Space(channels=8, cells_per_stage=1, skip_disconnected=True))
    sample: SampleConfig = field(default_factory=SampleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    #: how each architecture is trained on a summary (one row per distiller, and one per
    #: further name in its ``scores``): the DSA/DM/MTT evaluation protocol (DSA augmentation,
    #: Zhao & Bilen, ICML 2021), scored on the validation split
    proxy: Proxy = field(default_factory=lambda: TrainProxy(epochs=200, batch_size=256, lr=0.05, augment="dsa"))
    #: proxies that need no summary, reported beside the distillers
    baselines: dict[str, Proxy] = field(default_factory=lambda: {"params": ParamsProxy()})
    #: the ground truth the proxies are ranked against: full-data training scored on the
    #: test split (NAS-Bench-201's protocol)
    reference: Proxy = field(
        default_factory=lambda: TrainProxy(epochs=30, batch_size=128, lr=0.1, eval_split="test")
    )
    #: a teacher trained once on the full training split that relabels the summaries of
    #: ``teacher.relabel`` (one ``<method>+teacher`` row each; see :mod:`proxynas.teacher`)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    #: rows combining other rows' scores by rank (e.g. ``{az_sotl: {rows: [az_nas, dm:sotl_5]}}``)
    combined: dict[str, CombinedRow] = field(default_factory=dict)
    report: ReportConfig = field(default_factory=ReportConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.report.top_k > self.sample.num_archs:
            raise ValueError(
                f"report.top_k={self.report.top_k} exceeds sample.num_archs={self.sample.num_archs}; lower report.top_k"
            )
        for name in self.teacher.relabel:
            if name not in self.distill.methods:
                raise ValueError(
                    f"teacher.relabel names {name!r}, which is not in distill.methods"
                    f" ({', '.join(self.distill.methods) or 'none'}); add it there or remove it"
                )
        if self.teacher.relabel and self.teacher.arch != CONVNET:
            try:
                self.space.validate(self.teacher.arch)
            except (ValueError, KeyError) as exc:
                raise ValueError(f"teacher.arch: {exc}; use {CONVNET!r} or an architecture of the space") from None
        for where, proxy in [("proxy", self.proxy), ("reference", self.reference), *(
            (f"baselines.{name}", p) for name, p in self.baselines.items()
        )]:
            if proxy.archs_per_scoring() > 1 and not proxy.batches_in(self.space):
                raise ValueError(
                    f"{where}.arch_batch={proxy.archs_per_scoring()} trains architectures fused, which the"
                    f" {self.space.name} space does not support; set {where}.arch_batch: 1"
                    f" or {where}.batching: side_by_side"
                )
            if getattr(proxy, "arch_batch", None) == "auto" and self.run.storage:
                # every process must cut the same groups; auto would cut them by its own device's memory
                raise ValueError(
                    f"{where}.arch_batch=auto cannot be shared by the processes of run.storage (each device"
                    f" would choose its own); set {where}.arch_batch to a number"
                )
        rows = self.row_names()
        for name, spec in self.combined.items():
            if name in rows:
                raise ValueError(f"combined.{name}: the name is already a row; choose another")
            unknown = [r for r in spec.rows if r not in rows]
            if unknown:
                raise ValueError(f"combined.{name}: no row {unknown[0]!r} to combine; rows: {', '.join(rows)}")
            scored = self.sample.num_archs - spec.k
            if spec.method == "few_shot" and scored < max(self.report.top_k, 2):
                raise ValueError(
                    f"combined.{name}.k={spec.k} leaves {scored} of sample.num_archs={self.sample.num_archs}"
                    f" archs to score, fewer than report.top_k={self.report.top_k}; lower k or draw more archs"
                )

    def row_names(self) -> list[str]:
        """The names of the pipeline's proxy rows, in report order (combined rows excluded)."""
        names = []
        relabelled = [(relabelled_row(m), self.proxy) for m in self.teacher.relabel]
        for name, proxy in [*((m, self.proxy) for m in self.distill.methods), *relabelled, *self.baselines.items()]:
            values = proxy.value_names()
            names += [name] + [f"{name}:{v}" for v in values[1:]]
        return names


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline YAML, apply ``key=value`` overrides, validate."""
    path = check_pipeline_file(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path} is not valid YAML: {yaml_error_message(exc)}; fix the file there"
            " (unclosed brackets or quotes, a missing ':' or a tab in the indentation are the usual causes)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file; give a pipeline YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline file {path} ({exc.strerror or exc}); check its permissions") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else f"{type(raw).__name__} {raw!r}"[:80]
        raise ConfigError(
            f"{path}: the top level of a pipeline file must be a mapping of sections (run:, data:, sample:, ...),"
            f" got {kind}; remove the leading '- ' items or see pipelines/quickstart.yaml"
        )
    raw = apply_overrides(raw, overrides or [])
    if raw.get("run") is None:
        raw["run"] = {}
    if isinstance(raw["run"], dict):
        raw["run"].setdefault("name", path.stem)
    return from_dict(PipelineConfig, raw)


def dump_config(config: PipelineConfig) -> str:
    """The fully resolved config as YAML (every default made explicit)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
