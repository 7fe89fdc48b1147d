"""What a sweep found: its trials in order, the best configuration and the parameter importance,
rebuilt from result rows (the report is only a view of results).

A sweep is the rows of one strategy whose ``trial_id`` is not empty. Trials are ordered by
``trial_id`` with digit runs compared as numbers (Ray Tune's ids end in a running index, so
this is the order they were started in). A trial's score is its ``val`` metric of the ``fused``
output; the best trial is the finished one with the highest (a trial that the scheduler stopped
early, ``status`` ``stopped``, keeps the last score it reported and is shown as such, never
chosen). The parameters are the flattened config keys
(``params.lambda_distill``...) whose value differs between trials (``seed``, ``device`` and
``num_threads`` left out).

Importance: an Optuna study is rebuilt from the trials (numbers become Float/Int
distributions over the observed range, log scale when positive and spanning >= 100x; anything
else is categorical) and scored with Optuna's fANOVA evaluator (``seed=0``: deterministic).
It needs at least 3 finished trials and one varying parameter; otherwise the note says why.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

NOT_PARAMS = frozenset({"seed", "device", "num_threads"})
MIN_TRIALS = 3


@dataclass(frozen=True)
class Trial:
    trial_id: str
    run_id: str
    score: float
    params: dict[str, Any]  # the varying parameters only
    status: str = "finished"  # finished | stopped (by the scheduler) | diverged | failed


@dataclass(frozen=True)
class SweepSummary:
    label: str
    trials: list[Trial]
    importance: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def best(self) -> Trial:
        finished = [t for t in self.trials if t.status == "finished" and math.isfinite(t.score)]
        return max(finished or self.trials, key=lambda t: t.score)


def natural_key(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def varying(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = sorted({k for c in configs for k in c} - NOT_PARAMS)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def sweep_trials(rows: pd.DataFrame, metric: str) -> list[Trial]:
    """One :class:`Trial` per run of ``rows`` (one strategy's trial rows), in trial order."""
    runs = rows.drop_duplicates("run_id").sort_values(
        "trial_id", key=lambda s: s.map(natural_key), kind="stable")
    scored = rows[(rows["metric"] == metric) & (rows["split"] == "val")
                  & (rows["modality"] == "fused")].set_index("run_id")["value"]
    configs = [flatten(json.loads(c)) for c in runs["config_json"]]
    keys = varying(configs)
    statuses = (runs["status"] if "status" in runs else [""] * len(runs))
    return [Trial(t, r, score := float(scored.get(r, float("nan"))), {k: c.get(k) for k in keys},
                  st or ("finished" if math.isfinite(score) else "failed"))
            for t, r, c, st in zip(runs["trial_id"], runs["run_id"], configs, statuses,
                                   strict=True)]


def summarise_sweep(label: str, rows: pd.DataFrame, metric: str) -> SweepSummary:
    trials = sweep_trials(rows, metric)
    finished = [t for t in trials if t.status == "finished" and math.isfinite(t.score)]
    keys = sorted({k for t in trials for k in t.params})
    if len(finished) < MIN_TRIALS or not keys:
        why = (f"{len(finished)} finished trial(s)" if len(finished) < MIN_TRIALS
               else "no parameter varies between trials")
        return SweepSummary(label, trials, note=f"importance not computed: {why} "
                                                f"(needs >= {MIN_TRIALS} and a varying one)")
    try:
        return SweepSummary(label, trials, param_importance(finished, keys))
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return SweepSummary(label, trials, note=f"importance not computed: {e}")


def _distribution(values: Sequence[Any]) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values) and min(numbers) < max(numbers):
        low, high = min(numbers), max(numbers)
        log = low > 0 and high / low >= 100
        if all(isinstance(v, int) for v in numbers):
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    return CategoricalDistribution(sorted({_category(v) for v in values}))


def _category(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def param_importance(trials: Sequence[Trial], keys: Sequence[str]) -> dict[str, float]:
    """fANOVA importance (Optuna) of ``keys`` for the trials' scores; sums to 1."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    dists = {k: _distribution([t.params.get(k) for t in trials]) for k in keys}
    built = []
    for t in trials:
        params = {k: _category(t.params.get(k)) if isinstance(d, CategoricalDistribution)
                  else t.params.get(k) for k, d in dists.items()}
        built.append(optuna.trial.create_trial(params=params, distributions=dists,
                                               value=t.score))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        study.add_trials(built)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: float(v) for k, v in found.items()}
