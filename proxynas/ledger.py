"""The evaluation ledger: architecture evaluations as trials of Optuna studies.

One study per proxy row of a pipeline run, one trial per architecture: the
trial's value is the proxy's score, the reference result and the costs are user
attributes, and the architecture's encoding is the trial's parameters. Kept in
Optuna's own storage (sqlite here, any RDB or journal file elsewhere), the same
ledger later serves search, tuning and several workers without new plumbing.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import optuna
from optuna.distributions import IntDistribution

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Ledger:
    """Records evaluations in an Optuna storage (URL or storage object)."""

    def __init__(self, storage: str | optuna.storages.BaseStorage) -> None:
        self.storage = optuna.storages.get_storage(storage) if isinstance(storage, str) else storage

    def study(self, name: str, *, fresh: bool = False) -> optuna.Study:
        """The study ``name`` (created if needed; emptied first when ``fresh``)."""
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
        study = self.study(study_name, fresh=True)
        for key, val in attrs.items():
            study.set_user_attr(key, val)
        dists = {f"x{i}": IntDistribution(0, n - 1) for i, n in enumerate(cardinalities)}
        trials = []
        for ev in evaluations:
            value = float(ev["value"])
            extra = {k: v for k, v in ev.items() if k not in ("code", "value")}
            trials.append(
                optuna.trial.create_trial(
                    params={f"x{i}": int(c) for i, c in enumerate(ev["code"])},
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
        study = optuna.load_study(study_name=study_name, storage=self.storage)
        return [
            {**t.user_attrs, "value": t.value}
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        ]
