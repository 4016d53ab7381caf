"""Tune a proxy for rank preservation: an Optuna study over distillation and training settings.

The objective of a trial is Kendall tau between the proxy (one pipeline row,
with the trial's settings applied as ``--set`` overrides) and the reference on
a *calibration* set of architectures. The best settings are then scored once
on a disjoint *held-out* set, so the number reported is not the maximum of
many noisy calibration scores. Trials report tau as the calibration archs are
scored, and a median pruner (as Optuna's, Akiba et al., KDD 2019, but step by
step) stops settings that rank worse than the median trial at the same point.

Trials run through :func:`proxynas.distributed.run_worker`, so any number of
``proxynas worker`` processes on any machines can share one tuning study; the
summaries they need come from the stage cache (computed once per setting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from scipy import stats

from proxynas.config.pipeline import PipelineConfig, TuneConfig, TuneParam, check_storage_url, load_config
from proxynas.distributed import open_storage, open_study, run_worker
from proxynas.errors import ConfigError, DivergenceError

OVERRIDES_ATTR = "overrides"
INFEASIBLE_ATTR = "infeasible"  # why a trial's settings could not be loaded


def kendall(proxy: Sequence[float], reference: Sequence[float]) -> float:
    """Kendall tau-b; 0 when undefined (a constant proxy carries no ranking)."""
    tau = stats.kendalltau(proxy, reference).statistic
    return 0.0 if tau is None or math.isnan(tau) else float(tau)


def split_archs(config: PipelineConfig) -> tuple[list[str], list[str]]:
    """Disjoint calibration and held-out archs drawn together from the space with ``tune.seed``."""
    tune = config.tune
    drawn = config.space.sample(tune.calibration + tune.holdout, seed=tune.seed)
    return drawn[: tune.calibration], drawn[tune.calibration :]


def suggest(trial: optuna.Trial, key: str, param: TuneParam) -> Any:
    if param.choices is not None:
        return trial.suggest_categorical(key, list(param.choices))
    if param.integer:
        return trial.suggest_int(key, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(key, param.low, param.high, log=param.log)


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``--set`` strings for ``{config key: value}`` (repr keeps floats exact)."""
    return [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}" for key, value in values.items()]


class StepMedianPruner(optuna.pruners.BasePruner):
    """Prune when the trial's value *at this step* is below the median of finished trials at that step.

    Optuna's :class:`~optuna.pruners.MedianPruner` compares the best value a
    trial reached at *any* step so far; a rank correlation over the first two
    or three archs is often a perfect +1, which would then shield every trial
    from pruning. Rank metrics are compared step for step instead.
    """

    def __init__(self, n_startup_trials: int = 3) -> None:
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        peers = [t.intermediate_values[step] for t in finished if step in t.intermediate_values]
        if len(finished) < self.n_startup_trials or not peers:
            return False
        peers.sort()
        mid = len(peers) // 2
        median = peers[mid] if len(peers) % 2 else (peers[mid - 1] + peers[mid]) / 2
        return trial.intermediate_values[step] < median


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    best_params: dict[str, Any]
    calibration_tau: float
    holdout_tau: float
    holdout_spearman: float
    default_holdout_tau: float
    trials: int
    pruned: int


class Tuner:
    """The tuning study of one pipeline file (its ``tune`` section and row)."""

    def __init__(
        self,
        pipeline: str | Path,
        overrides: Sequence[str] = (),
        *,
        objective_factory: Callable[[PipelineConfig, str], Any] | None = None,
    ) -> None:
        self.pipeline = Path(pipeline)
        self.overrides = list(overrides)
        self.config = load_config(self.pipeline, self.overrides)
        self.tune: TuneConfig = self.config.tune
        if not self.tune.params:
            raise ConfigError("tune.params is empty; name the settings to tune, e.g. "
                              "--set 'tune.params={proxy.epochs: {choices: [50, 100]}}'")
        if objective_factory is None:
            from proxynas.search.objective import ProxyObjective

            objective_factory = ProxyObjective.from_pipeline
        # (config, row) -> an object whose evaluate(arch).value scores one arch
        self._objective = objective_factory
        self.calibration, self.holdout = split_archs(self.config)
        # built on first use: it loads the dataset (and may train), so a bad storage URL or
        # other setting is reported before that expensive work
        self._reference: Any = None

    @property
    def study_name(self) -> str:
        return f"tune/{self.config.run.name}/{self.tune.row}"

    def reference(self, archs: Sequence[str]) -> list[float]:
        if self._reference is None:
            self._reference = self._objective(self.config, "reference")
        return [self._reference.evaluate(a).value for a in archs]

    def config_for(self, values: dict[str, Any]) -> PipelineConfig:
        """The pipeline under the settings ``values`` (ConfigError if they are infeasible together)."""
        return load_config(self.pipeline, self.overrides + as_overrides(values))

    def proxy_values(self, config: PipelineConfig, archs: Sequence[str], report=None) -> list[float]:
        """Score ``archs`` with the row of ``config`` (see :meth:`config_for`); ``report(i, scores)`` after each."""
        objective = self._objective(config, self.tune.row)
        scores = []
        for i, arch in enumerate(archs):
            scores.append(objective.evaluate(arch).value)
            if report is not None:
                report(i + 1, scores)
        return scores

    def trial_objective(self) -> Callable[[optuna.Trial], float]:
        ref = self.reference(self.calibration)

        def objective(trial: optuna.Trial) -> float:
            values = {key: suggest(trial, key, p) for key, p in self.tune.params.items()}
            trial.set_user_attr(OVERRIDES_ATTR, as_overrides(values))
            try:
                config = self.config_for(values)
            except ConfigError as exc:
                # e.g. MTT's start epoch beyond its experts' epochs: a region of the
                # space, not a bug. Pruned (not failed) so TPE learns to avoid it.
                trial.set_user_attr(INFEASIBLE_ATTR, str(exc))
                raise optuna.TrialPruned(f"infeasible settings: {exc}") from None

            def report(done: int, scores: list[float]) -> None:
                if done % self.tune.report_every == 0 and done < len(self.calibration):
                    trial.report(kendall(scores, ref[:done]), done)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"tau after {done} archs below the median")

            return kendall(self.proxy_values(config, self.calibration, report), ref)

        return objective

    def open(self, storage: str) -> optuna.Study:
        """Create or join the tuning study in Optuna storage URL ``storage`` (checked first, see
        :func:`proxynas.config.pipeline.check_storage_url`)."""
        check_storage_url(storage, "storage")
        sampler = (
            optuna.samplers.TPESampler(seed=self.tune.seed)
            if self.tune.sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=self.tune.seed)
        )
        pruner = StepMedianPruner(n_startup_trials=3)
        return open_study(self.study_name, open_storage(storage), sampler=sampler, pruner=pruner)

    def work(self, study: optuna.Study, callbacks: Sequence = ()) -> int:
        """Run trials until the study holds ``tune.trials`` (any number of workers at once)."""
        return run_worker(study, self.trial_objective(), self.tune.trials, callbacks=callbacks,
                          catch=(DivergenceError,))

    def finish(self, study: optuna.Study) -> TuneResult:
        """Score the best settings, and the pipeline's own settings, on the held-out archs."""
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise ConfigError(f"study {self.study_name} has no completed trial; run more trials")
        best = max(done, key=lambda t: t.value)
        ref = self.reference(self.holdout)
        tuned = self.proxy_values(self.config_for(best.params), self.holdout)
        default = self.proxy_values(self.config_for({}), self.holdout)
        return TuneResult(
            study_name=self.study_name,
            best_params=dict(best.params),
            calibration_tau=float(best.value),
            holdout_tau=kendall(tuned, ref),
            holdout_spearman=float(stats.spearmanr(tuned, ref).statistic),
            default_holdout_tau=kendall(default, ref),
            trials=len(study.trials),
            pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        )


def format_result(result: TuneResult) -> str:
    lines = [
        f"study {result.study_name}: {result.trials} trials ({result.pruned} pruned)",
        "best settings: " + ", ".join(f"{k}={v}" for k, v in result.best_params.items()),
        f"Kendall tau  calibration {result.calibration_tau:+.3f}   held-out {result.holdout_tau:+.3f}"
        f"   (pipeline's own settings on held-out: {result.default_holdout_tau:+.3f})",
        f"Spearman held-out {result.holdout_spearman:+.3f}",
    ]
    return "\n".join(lines)
