"""Hyper-parameter sweeps: Ray Tune + Optuna TPE + ASHA, each trial driving a ``TorchTrainer``.

The three functions of the Train-inside-Tune pattern (docs/ray.md, point 1): the per-worker
function (:func:`orchestrator.train_fn.train_fn_per_worker`), the driver :func:`trial_fn` (a Tune
function trainable that builds the trainer; ``TuneReportCallback`` forwards the worker's reports
to Tune, and ASHA's time is the reported ``epoch``, which stays right when one report sums up
several short epochs) and :func:`run_sweep` (the Tuner). A trial whose
run is already in the run store replays its stored history instead of training. A trial whose
loss becomes NaN raises :class:`~trainers.loop.TrainingDiverged`: Tune marks it ERROR and the sweep
goes on. ``resume=True`` restores an interrupted sweep with ``Tuner.restore``; finished trials
are not rerun, and interrupted ones resume their Train run from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from orchestrator.jobs import max_concurrent, resolve_resources
from orchestrator.lock import experiment_lock
from orchestrator.ray_utils import driver_resources
from orchestrator.space import SearchSpace, native
from orchestrator.train_fn import (
    BEST_KEY,
    DataRef,
    JobResources,
    JobSpec,
    finished_record,
    fit_job,
    make_job,
    ray_storage,
    report_metrics,
    running_best,
)
from trainers.api import build
from trainers.checkpoint import resolving
from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DatasetSpec
from trainers.layout import ray_files
from trainers.loop import TrainingDiverged, selection_score
from trainers.runs import RunRecord
from trainers.storage import Storage

TUNE_ENV = {
    # Tune snapshots the experiment every >= 10 s by default; often enough that restore has state.
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    # Ctrl-C raises KeyboardInterrupt at once. Tune's own handler would end fit() "normally"
    # with every trial marked TERMINATED, indistinguishable from a finished sweep.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}


class SweepInterrupted(KeyboardInterrupt):
    """Tune stopped on Ctrl-C (SIGINT) with trials unfinished; ``--resume`` continues it."""


@dataclass(frozen=True)
class SweepConfig:
    """How to search: ``num_samples`` trials, TPE seeded with ``seed``, ASHA over epochs.

    ``max_concurrent=0`` runs as many trials as the cluster fits; ``grace_period=0`` lets ASHA
    judge a trial after a quarter of the longest trial's epochs, and not before the longest
    first stretch without a validation score (ReconBoost's first stage).
    """

    space: SearchSpace
    num_samples: int = 8
    seed: int = 0
    max_concurrent: int = 0
    grace_period: int = 0
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        checks = (("num_samples", 1, "a sweep needs at least one trial"),
                  ("seed", 0, "use a seed >= 0"), ("max_concurrent", 0, "0 means: as many as fit"),
                  ("grace_period", 0, "0 means: automatic"),
                  ("reduction_factor", 2, "ASHA keeps 1/reduction_factor of the trials per rung"))
        for name, low, fix in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"sweep {name} must be an integer >= {low} but got {value!r}; "
                                  f"{fix}")


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs besides its sampled values (small: shipped to each trial)."""

    data: DataRef
    spec: DatasetSpec
    base: TrainConfig  # strategy config with teachers / warm start already filled in
    space: SearchSpace
    storage: Storage
    resources: JobResources

    def job(self, values: Mapping[str, Any], trial_id: str = "") -> JobSpec:
        cfg = self.space.apply(self.base, values)
        return make_job(self.data, self.spec, cfg, self.storage, splits=("val",),
                        label=f"{self.space.strategy} trial {trial_id}".strip())


@dataclass(frozen=True)
class TrialOutcome:
    trial_id: str
    values: dict[str, Any]  # the sampled hyper-parameters
    job: JobSpec
    status: str  # finished | stopped (by ASHA) | diverged | error
    record: RunRecord | None  # the run store record of a finished trial
    last: dict[str, Any]  # the last metrics the trial reported
    error: str = ""

    @property
    def val_score(self) -> float | None:
        if self.record is None:
            return None
        return selection_score(self.record.metrics["val"], "fused")


def stored_history(job: JobSpec) -> list[dict[str, Any]] | None:
    """The per-epoch history of the job's finished run, or None."""
    record = job.record()
    return None if record is None else record.history()


def trial_fn(config: dict[str, Any], ctx: SweepContext) -> None:
    """One trial: replay a finished run, or drive a TorchTrainer that reports its epochs."""
    job = ctx.job(config, tune.get_context().get_trial_id())
    history = stored_history(job)
    if history is not None:
        best = None
        for flat in history:
            best = running_best(best, flat.get("score"))
            tune.report({**report_metrics(flat, best), "reused": 1})
        return
    result = fit_job(job, ctx.resources, callbacks=[TuneReportCallback()])
    finished_record(job, result)  # TrainingDiverged -> this trial is marked failed


def experiment_name(ctx: SweepContext, cfg: SweepConfig) -> str:
    """Deterministic, so ``--resume`` finds the sweep that the same arguments started."""
    ident = {"base": ctx.base.to_dict(), "space": [vars(p) for p in ctx.space],
             "num_samples": cfg.num_samples, "seed": cfg.seed, "data": vars(ctx.data)}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode())
    return f"{ctx.space.strategy}-{ctx.spec.name}-s{cfg.seed}-{digest.hexdigest()[:10]}"


def schedule(ctx: SweepContext) -> tuple[int, int]:
    """(epochs of the longest possible trial, epochs before its first validation score), with
    every key at its largest value: ASHA's ``max_t`` and the least sensible grace period."""
    cfg = ctx.space.apply(ctx.base, ctx.space.corner())
    with resolving(ctx.storage):  # teachers / warm starts are runs of this store
        phases = build(ctx.spec, cfg).phases()
    epochs = [(p.epochs, p.evaluate != "never") for p in phases]
    first = next((i for i, (_, scored) in enumerate(epochs) if scored), len(epochs) - 1)
    return sum(e for e, _ in epochs), sum(e for e, _ in epochs[:first + 1])


def startup_trials(num_samples: int) -> int:
    """Random trials before TPE starts modelling: a third of the budget, 2 to 10. Optuna's
    default of 10 would make every sweep of up to 10 trials a plain random search."""
    return min(10, max(2, num_samples // 3))


def _tuner(ctx: SweepContext, cfg: SweepConfig, name: str) -> tune.Tuner:
    max_t, first_score = schedule(ctx)
    asha = ASHAScheduler(time_attr="epoch", max_t=max_t,
                         grace_period=cfg.grace_period or max(first_score, max_t // 4),
                         reduction_factor=cfg.reduction_factor)
    sampler = optuna.samplers.TPESampler(seed=cfg.seed,
                                         n_startup_trials=startup_trials(cfg.num_samples))
    search = OptunaSearch(sampler=sampler)
    return tune.Tuner(
        _trainable(ctx),
        param_space=ctx.space.to_tune(),
        tune_config=tune.TuneConfig(
            metric=BEST_KEY, mode="max", search_alg=search, scheduler=asha,
            num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent or max_concurrent(ctx.resources),
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
        run_config=tune.RunConfig(name=name, **ray_storage(ctx.storage, "tune"),
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def _trainable(ctx: SweepContext) -> Any:
    """The trial function with its context attached; a trial is only a driver (no CPU)."""
    return tune.with_resources(tune.with_parameters(trial_fn, ctx=ctx),
                               {"cpu": 0, **driver_resources()})




def run_sweep(ctx: SweepContext, cfg: SweepConfig, resume: bool = False) -> list[TrialOutcome]:
    """Run (or, with ``resume``, restore and finish) the sweep; one outcome per trial."""
    for key, value in TUNE_ENV.items():
        os.environ.setdefault(key, value)
    ctx = replace(ctx, resources=resolve_resources(ctx.resources))
    name = experiment_name(ctx, cfg)
    with experiment_lock(ray_files(ctx.storage, "tune"), name):
        return _run_locked(ctx, cfg, name, resume)


def _run_locked(ctx: SweepContext, cfg: SweepConfig, name: str,
                resume: bool) -> list[TrialOutcome]:
    state = ray_files(ctx.storage, "tune").child(name)
    path = state.location
    if resume:
        if not tune.Tuner.can_restore(state.path(), storage_filesystem=state.fs):
            raise ConfigError(f"--resume: no interrupted sweep at {path}; run without --resume "
                              "(with the same arguments as the interrupted run) to start one")
        print(f"[sweep] resuming {path}", flush=True)
        tuner = tune.Tuner.restore(state.path(), trainable=_trainable(ctx),
                                   resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=state.fs)
    else:
        if state.is_dir():  # Tune state only; finished runs stay in the run store
            print(f"[sweep] starting over: replacing the earlier sweep state in {path} "
                  "(finished trials are reused from the run store)", flush=True)
            state.delete()
        tuner = _tuner(ctx, cfg, name)
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        raise SweepInterrupted(f"sweep interrupted, its state is saved in {path}; run again "
                               "with the same arguments and --resume to finish it") from None
    return [_outcome(ctx, r) for r in grid]


def _outcome(ctx: SweepContext, result: tune.Result) -> TrialOutcome:
    trial_id = result.path.rstrip("/").rsplit("/", 1)[-1].removeprefix("trial_")
    values = {k: native(v) for k, v in (result.config or {}).items()}
    job = ctx.job(values, trial_id)
    record = job.record()
    last = dict(result.metrics or {})
    if result.error is not None:
        status = "diverged" if _diverged(result.error) else "error"
        return TrialOutcome(trial_id, values, job, status, None, last, _first_line(result.error))
    return TrialOutcome(trial_id, values, job, "finished" if record else "stopped", record, last)


def _diverged(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TrainingDiverged):
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__
    return TrainingDiverged.__name__ in str(err)


def _first_line(err: BaseException) -> str:
    lines = [ln for ln in str(err).splitlines() if TrainingDiverged.__name__ in ln]
    return (lines or str(err).splitlines() or [type(err).__name__])[-1].strip()[:300]


def best_trial(outcomes: Sequence[TrialOutcome]) -> TrialOutcome | None:
    """The finished trial with the best validation selection score (None if none finished)."""
    done = [o for o in outcomes if o.status == "finished"]
    return max(done, key=lambda o: o.val_score or 0.0, default=None)


def describe(outcomes: Sequence[TrialOutcome]) -> str:
    """One line per trial: id, status, validation score and sampled values."""
    lines = []
    for o in sorted(outcomes, key=lambda o: o.trial_id):
        score = o.val_score if o.val_score is not None else o.last.get(BEST_KEY)
        shown = f"{100 * score:.2f}" if isinstance(score, float) else "-"
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(o.values.items()))
        tail = f"  [{o.error}]" if o.error else ""
        lines.append(f"  {o.trial_id:<12} {o.status:<9} val {shown:>6}  {values}{tail}")
    return "\n".join(lines)

