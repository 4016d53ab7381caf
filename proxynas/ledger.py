"""The evaluation ledger: architecture evaluations as trials of Optuna studies.

One study per proxy row of a pipeline run, one trial per architecture: the
trial's value is the proxy's score, the reference result and the costs are user
attributes, and the architecture's encoding is the trial's parameters (the
same categorical parameters a search study uses, see
:mod:`proxynas.search.encoding`). Kept in Optuna's own storage (sqlite here,
any RDB or journal file elsewhere), the same ledger later serves search,
tuning and several workers without new plumbing.

Writing it is a runner hook (:class:`LedgerHook`), not work inside a stage: the
hook records a stage's evaluations whenever the ledger lacks them -- also when
the stage came from the cache, e.g. after pointing ``run.ledger`` at a new
database.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Mapping, Sequence

import optuna

from proxynas.artifacts import Evaluations
from proxynas.engine.hooks import Hook
from proxynas.search.encoding import code_distributions, param_name
from proxynas.errors import ConfigError
from proxynas.storage import check_sqlite, sqlite_errors, sqlite_lock

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: study user attribute: the cache key of the stage whose evaluations the study holds
SOURCE_KEY_ATTR = "proxynas.source_key"
#: the config setting a ledger URL comes from, named in its errors
LEDGER_SETTING = "run.ledger"
_LEDGER_FIX = "point it at a writable file, e.g. --set run.ledger=sqlite:///PATH/ledger.db"


def check_ledger_url(url: str, setting: str = LEDGER_SETTING) -> None:
    """Fail with a one-line ConfigError unless ``url`` is a database URL the ledger can write.

    Cheap (no database is opened), so the app runs it before any stage: a run
    must not compute for hours and then fail to record its results. A local
    sqlite file must be creatable or an intact, writable SQLite file (see
    :func:`proxynas.storage.check_sqlite`); other URLs are only checked for form.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"{setting} {url!r} is not a database URL; use sqlite:///path/ledger.db or postgresql://user@host/db"
        )
    check_sqlite(url, setting, _LEDGER_FIX)


class Ledger:
    """Records evaluations in an Optuna storage (URL or storage object).

    Opening a URL checks it first (:func:`check_ledger_url`) and holds the
    database's lock file while Optuna creates its tables, so several runs
    starting at once in a fresh folder do not collide; a corrupted or unwritable
    file is a one-line ConfigError naming ``setting``, also when found later.
    """

    def __init__(self, storage: str | optuna.storages.BaseStorage, *, setting: str = LEDGER_SETTING) -> None:
        self.url: str | None = storage if isinstance(storage, str) else None
        self.setting = setting
        if isinstance(storage, str):
            check_ledger_url(storage, setting)
            with sqlite_lock(storage), self._errors():
                storage = optuna.storages.get_storage(storage)
        self.storage = storage

    def _errors(self) -> AbstractContextManager[None]:
        """Turns SQLite failures of a ledger opened by URL into one-line ConfigErrors."""
        return sqlite_errors(self.url, self.setting, _LEDGER_FIX) if self.url else nullcontext()

    def study(self, name: str, *, fresh: bool = False) -> optuna.Study:
        """The study ``name`` (created if needed; emptied first when ``fresh``)."""
        with self._errors():
            if fresh:
                try:
                    optuna.delete_study(study_name=name, storage=self.storage)
                except KeyError:
                    pass
            return optuna.create_study(
                study_name=name, storage=self.storage, direction="maximize", load_if_exists=True
            )

    def record(
        self,
        study_name: str,
        evaluations: Sequence[Mapping[str, Any]],
        *,
        cardinalities: Sequence[int],
        attrs: Mapping[str, Any] = {},
    ) -> optuna.Study:
        """Write one COMPLETE trial per evaluation.

        Each evaluation has ``arch``, ``code`` (tuple of choice indices), ``value``
        and any extra scalars (reference, seconds...) kept as user attributes.
        """
        with self._errors():
            study = self.study(study_name, fresh=True)
            for key, val in attrs.items():
                study.set_user_attr(key, val)
            dists = code_distributions(cardinalities)
            trials = []
            for ev in evaluations:
                value = float(ev["value"])
                extra = {k: v for k, v in ev.items() if k not in ("code", "value")}
                trials.append(
                    optuna.trial.create_trial(
                        params={param_name(i): int(c) for i, c in enumerate(ev["code"])},
                        distributions=dists,
                        value=value if math.isfinite(value) else None,
                        state=(
                            optuna.trial.TrialState.COMPLETE
                            if math.isfinite(value)
                            else optuna.trial.TrialState.FAIL
                        ),
                        user_attrs=extra,
                    )
                )
            study.add_trials(trials)
            return study

    def evaluations(self, study_name: str) -> list[dict[str, Any]]:
        """Read back ``[{arch, value, **user_attrs}]`` of completed trials."""
        with self._errors():
            study = optuna.load_study(study_name=study_name, storage=self.storage)
            return [
                {**t.user_attrs, "value": t.value}
                for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            ]

    def holds(self, study_name: str, source_key: str, n_trials: int) -> bool:
        """Whether study ``study_name`` already holds ``n_trials`` trials recorded from ``source_key``."""
        with self._errors():
            try:
                study = optuna.load_study(study_name=study_name, storage=self.storage)
            except KeyError:
                return False
            return study.user_attrs.get(SOURCE_KEY_ATTR) == source_key and len(study.trials) == n_trials


class LedgerHook(Hook):
    """Records the :class:`~proxynas.artifacts.Evaluations` a stage outputs as ``<run>/<row>`` studies.

    ``output`` names the stage output holding a list of them (the pipeline's
    ``report`` stage). A study is (re)written whenever the ledger does not hold
    exactly those evaluations from that stage's cache key, so a cached run
    fills a new or emptied ledger, and an unchanged rerun writes nothing.
    """

    def __init__(self, ledger: Ledger, output: str = "evaluations") -> None:
        self.ledger = ledger
        self.output = output
        self.run_name = "pipeline"
        #: studies written by the last run (names), for callers and tests
        self.written: list[str] = []

    def before_pipeline(self, graph, run_info: dict[str, Any]) -> None:
        self.run_name = str(run_info.get("name", self.run_name))
        self.written = []

    def after_stage(self, stage, key: str, outputs: Mapping[str, Any], seconds: float, cached: bool) -> None:
        if self.output not in outputs:
            return
        evaluations: Sequence[Evaluations] = outputs[self.output]
        for ev in evaluations:
            name = f"{self.run_name}/{ev.row}"
            if self.ledger.holds(name, key, len(ev.records)):
                continue
            self.ledger.record(name, ev.records, cardinalities=ev.cardinalities,
                               attrs={**ev.attrs, SOURCE_KEY_ATTR: key})
            self.written.append(name)
