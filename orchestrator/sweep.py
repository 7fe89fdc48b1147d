"""Hyper-parameter sweeps: Ray Tune + Optuna (TPE by default) + ASHA.

A single-worker trial trains itself (:func:`orchestrator.trials.train_in_trial`: the trial
process is the worker, kept warm for the next trial with ``reuse_actors``); a data-parallel
trial drives a ``TorchTrainer`` (the Train-inside-Tune pattern, docs/ray.md, point 1;
``TuneReportCallback`` forwards the workers' reports). ASHA's time is the reported ``epoch``,
which stays right when one report sums up several short epochs. A trial whose run is already in
the run store replays its stored history instead of training. A trial whose loss becomes NaN is
``diverged`` and the sweep goes on. ``resume=True`` restores an interrupted sweep with
``Tuner.restore``; finished trials are not rerun, and interrupted ones resume their run from its
last saved state. :func:`sweep_grid` takes any Tune ``search_alg`` and ``scheduler`` and returns
Tune's ``ResultGrid``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.jobs import max_concurrent, resolve_resources
from orchestrator.lock import experiment_lock
from orchestrator.ray_utils import driver_resources
from orchestrator.search import limited, scheduler_plan, searcher, start_points
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
)
from orchestrator.trials import (
    replay,
    seeds_in_trial,
    stored_history,
    trains_in_trial,
    trial_resources,
    tune_env,
)
from orchestrator.worker import outcome_of
from trainers.config import ConfigError, TrainConfig, finite
from trainers.data.contract import DatasetSpec
from trainers.experiment import SCHEDULERS, SEARCHERS
from trainers.layout import ray_files
from trainers.loop import TrainingDiverged, selection_score
from trainers.runs import RunRecord
from trainers.storage import Storage

LOG = logging.getLogger(__name__)


MIN_GAIN = 1.5  # validation points; measured with benchmarks/sweep_pays.py (docs/ray.md, 14)


class SweepInterrupted(KeyboardInterrupt):
    """Tune stopped on Ctrl-C (SIGINT) with trials unfinished; ``--resume`` continues it."""


@dataclass(frozen=True)
class SweepConfig:
    """How to search: up to ``num_samples`` trials within ``budget`` default runs (0: no
    budget), TPE seeded with ``seed``, ASHA over epochs, chosen against the untuned
    configuration with ``min_gain`` (:mod:`orchestrator.choice`).

    ``max_concurrent=0`` runs as many trials as the cluster fits; ``grace_period=0`` lets ASHA
    judge a trial after an eighth of the longest trial's epochs, and not before the longest
    first stretch without a validation score (ReconBoost's first stage). ASHA keeps the best
    1/``reduction_factor`` of the trials at each rung: 3, Hyperband's choice (4 cost more and
    chose worse, measured with benchmarks/sweep_pays.py). Rules: :mod:`orchestrator.search`,
    :mod:`orchestrator.budget`.
    """

    space: SearchSpace
    num_samples: int = 8
    seed: int = 0
    max_concurrent: int = 0
    grace_period: int = 0
    reduction_factor: int = 3
    searcher: str = "tpe"  # one of SEARCHERS
    scheduler: str = "asha"  # one of SCHEDULERS
    seeds_per_trial: int = 1  # seeds each trial trains; its score is their mean
    default_first: bool = True  # the first trial is the untuned configuration (if in the space)
    budget: float = 0.0  # in default runs: the untuned configuration's epochs on one seed
    min_gain: float = MIN_GAIN  # validation points to beat the untuned configuration by

    def __post_init__(self) -> None:
        for name, valid in (("searcher", SEARCHERS), ("scheduler", SCHEDULERS)):
            if getattr(self, name) not in valid:
                raise ConfigError(f"--{name} must be one of {', '.join(valid)} but got "
                                  f"{getattr(self, name)!r}")
        checks = (("num_samples", 1, "a sweep needs at least one trial"),
                  ("seed", 0, "use a seed >= 0"), ("max_concurrent", 0, "0 means: as many as fit"),
                  ("grace_period", 0, "0 means: automatic"),
                  ("reduction_factor", 2, "ASHA keeps 1/reduction_factor of the trials per rung"),
                  ("seeds_per_trial", 1, "each trial trains one seed at least"))
        if not isinstance(self.default_first, bool):
            raise ConfigError(f"sweep default_first must be true or false but got "
                              f"{self.default_first!r}")
        finite("sweep budget", self.budget, float,
               ">= 0 (in default runs; 0: no budget)")
        if self.budget < 0:
            raise ConfigError(f"sweep budget must be >= 0 default runs but got {self.budget!r}; "
                              "e.g. --budget 3, or --budget 0 for no budget")
        finite("sweep min_gain", self.min_gain, float, ">= 0 (validation points)")
        if self.min_gain < 0:
            raise ConfigError(f"sweep min_gain must be >= 0 validation points but got "
                              f"{self.min_gain!r}; e.g. --min-gain 1, or 0 to take the best trial")
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
    more: tuple[TrainConfig, ...] = ()  # the same for the trial's other seeds (seeds_per_trial)
    # trial epochs the scheduler judges at, reported even between saved states; None: every
    # epoch (set by the sweep from its scheduler)
    report_epochs: tuple[int, ...] | None = ()

    def job(self, values: Mapping[str, Any], trial_id: str = "") -> JobSpec:
        return self.jobs(values, trial_id)[0]

    def jobs(self, values: Mapping[str, Any], trial_id: str = "") -> list[JobSpec]:
        """The trial's runs: its sampled values on each of its seeds' base configs."""
        return [make_job(self.data, self.spec, self.space.apply(base, values), self.storage,
                         splits=("val",), label=f"{self.space.strategy} trial {trial_id}".strip())
                for base in (self.base, *self.more)]


@dataclass(frozen=True)
class TrialOutcome:
    trial_id: str
    values: dict[str, Any]  # the sampled hyper-parameters
    job: JobSpec
    status: str  # finished | stopped (by ASHA) | diverged | error
    record: RunRecord | None  # the run store record of a finished trial (its first seed)
    last: dict[str, Any]  # the last metrics the trial reported
    error: str = ""
    records: tuple[RunRecord, ...] = ()  # every seed's record of a finished trial

    @property
    def val_score(self) -> float | None:
        """Validation selection score, the mean over the trial's seeds."""
        records = self.records or ((self.record,) if self.record is not None else ())
        if not records:
            return None
        return sum(selection_score(r.metrics["val"], "fused") for r in records) / len(records)


def trial_fn(config: dict[str, Any], ctx: SweepContext) -> None:
    """One trial: train (or replay from the store) its runs here, one seed after the other, or,
    data-parallel, replay or drive a TorchTrainer that reports its workers' epochs."""
    jobs = ctx.jobs(config, tune.get_context().get_trial_id())
    if trains_in_trial(ctx.resources):
        seeds_in_trial(jobs, ctx.resources, ctx.report_epochs)
        return
    (job,) = jobs
    history = stored_history(job)
    if history is not None:
        replay(history)
        return
    result = fit_job(job, ctx.resources, callbacks=[TuneReportCallback()])
    finished_record(job, result)  # TrainingDiverged -> this trial is marked failed


def experiment_name(ctx: SweepContext, cfg: SweepConfig) -> str:
    """Deterministic, so ``--resume`` finds the sweep that the same arguments started."""
    ident = {"base": ctx.base.to_dict(), "space": [vars(p) for p in ctx.space],
             **({"more": [c.to_dict() for c in ctx.more]} if ctx.more else {}),
             "num_samples": cfg.num_samples, "seed": cfg.seed, "data": vars(ctx.data),
             **({"budget": cfg.budget} if cfg.budget else {})}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode())
    return f"{ctx.space.strategy}-{ctx.spec.name}-s{cfg.seed}-{digest.hexdigest()[:10]}"


def _tuner(ctx: SweepContext, cfg: SweepConfig, name: str, search_alg: Any,
           scheduler_: Any = None) -> tune.Tuner:
    in_trial = trains_in_trial(ctx.resources)
    return tune.Tuner(
        _trainable(ctx),
        param_space=ctx.space.to_tune(),
        tune_config=tune.TuneConfig(
            metric=BEST_KEY, mode="max",
            search_alg=search_alg,
            scheduler=scheduler_, num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent or max_concurrent(ctx.resources),
            reuse_actors=in_trial,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
        run_config=tune.RunConfig(name=name, **ray_storage(ctx.storage, "tune"),
                                  failure_config=tune.FailureConfig(
                                      max_failures=ctx.resources.max_failures if in_trial
                                      else 0),
                                  **tune_verbosity()),
    )


def tune_verbosity() -> dict[str, int]:
    """Tune's trial table follows ``-q``: none when a command turned the orchestrator's progress
    lines off, Tune's default otherwise (also when nobody set up logging: a Python caller)."""
    quiet = logging.getLogger("orchestrator").level > logging.INFO
    return {"verbose": 0} if quiet else {}


def _trainable(ctx: SweepContext) -> Any:
    """The trial function with its context attached. A trial that trains holds its worker's
    resources; one that drives a TorchTrainer is only a driver (no CPU, on the head)."""
    resources: Any = (trial_resources(ctx.resources) if trains_in_trial(ctx.resources)
                      else {"cpu": 0, **driver_resources()})
    return tune.with_resources(tune.with_parameters(trial_fn, ctx=ctx), resources)


def run_sweep(ctx: SweepContext, cfg: SweepConfig, resume: bool = False) -> list[TrialOutcome]:
    """Run (or, with ``resume``, restore and finish) the sweep; one outcome per trial."""
    grid, ctx = _fit(ctx, cfg, resume, None, None)
    return [_outcome(ctx, r) for r in grid]


def sweep_grid(ctx: SweepContext, cfg: SweepConfig, search_alg: Any = None,
               scheduler: Any = None, resume: bool = False) -> tune.ResultGrid:
    """The sweep with any Tune ``search_alg`` and ``scheduler`` (``None``: the ones ``cfg``
    names); returns Tune's ``ResultGrid``. Trials report ``val_best`` (maximised) and
    ``epoch`` (a scheduler's time attribute); runs land in the run store as usual."""
    return _fit(ctx, cfg, resume, search_alg, scheduler)[0]


def _fit(ctx: SweepContext, cfg: SweepConfig, resume: bool, search_alg: Any,
         scheduler_: Any) -> tuple[tune.ResultGrid, SweepContext]:
    tune_env()
    if ctx.more and not trains_in_trial(ctx.resources):
        raise ConfigError(f"--seeds-per-trial {1 + len(ctx.more)} needs one worker per job; "
                          "use --workers-per-job 1 or --seeds-per-trial 1")
    start = start_points(ctx, cfg)
    chosen, epochs, accounts = scheduler_plan(ctx, cfg, scheduler_, start[0] if start else None)
    search_alg = limited(search_alg or searcher(cfg, start), accounts)
    ctx = replace(ctx, resources=resolve_resources(ctx.resources), report_epochs=epochs)
    name = experiment_name(ctx, cfg)
    with experiment_lock(ray_files(ctx.storage, "tune"), name):
        return _run_locked(ctx, cfg, name, resume, search_alg, chosen), ctx


def _run_locked(ctx: SweepContext, cfg: SweepConfig, name: str, resume: bool,
                search_alg: Any, scheduler_: Any) -> tune.ResultGrid:
    state = ray_files(ctx.storage, "tune").child(name)
    path = state.location
    if resume:
        if not tune.Tuner.can_restore(state.path(), storage_filesystem=state.fs):
            raise ConfigError(f"--resume: no interrupted sweep at {path}; run without --resume "
                              "(with the same arguments as the interrupted run) to start one")
        LOG.info(f"[sweep] resuming {path}")
        tuner = tune.Tuner.restore(state.path(), trainable=_trainable(ctx),
                                   resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=state.fs)
    else:
        if state.is_dir():  # Tune state only; finished runs stay in the run store
            LOG.info(f"[sweep] starting over: replacing the earlier sweep state in {path} "
                     "(finished trials are reused from the run store)")
            state.delete()
        tuner = _tuner(ctx, cfg, name, search_alg, scheduler_)
    try:
        return tuner.fit()
    except KeyboardInterrupt:
        raise SweepInterrupted(f"sweep interrupted, its state is saved in {path}; run again "
                               "with the same arguments and --resume to finish it") from None


def _outcome(ctx: SweepContext, result: tune.Result) -> TrialOutcome:
    trial_id = result.path.rstrip("/").rsplit("/", 1)[-1].removeprefix("trial_")
    values = {k: native(v) for k, v in (result.config or {}).items()}
    jobs = ctx.jobs(values, trial_id)
    job, found = jobs[0], [j.record() for j in jobs]
    records = tuple(r for r in found if r is not None)
    record = found[0] if len(records) == len(jobs) else None
    last = dict(result.metrics or {})
    if result.error is not None:
        status = "diverged" if _diverged(result.error) else "error"
        return TrialOutcome(trial_id, values, job, status, None, last, _first_line(result.error))
    diverged = outcome_of(last).get("diverged")
    if diverged:
        return TrialOutcome(trial_id, values, job, "diverged", None, last,
                            f"TrainingDiverged: {diverged}"[:300])
    return TrialOutcome(trial_id, values, job, "finished" if record else "stopped", record, last,
                        records=records if record else ())


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
