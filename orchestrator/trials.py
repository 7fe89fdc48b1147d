"""Single-worker jobs as Tune trials that train themselves, in warm processes.

A one-worker ``TorchTrainer`` costs a Train controller and a worker process per job, each
importing torch: about 15 s of fixed cost per job on 2 cores (benchmarks/overhead.py). Here the
Tune trial process is the worker: it holds the job's resources (one GPU per trial on GPU nodes),
runs :func:`orchestrator.worker.train_job` with a :class:`~orchestrator.worker.TuneSink`, and Tune
keeps the process for the next job (``reuse_actors``), so torch is imported once per process,
not once per job. Fault tolerance stays: Tune retries a failed trial ``max_failures`` times and
the run resumes from its state in the run store; a rerun of an interrupted script resumes it
the same way. Data-parallel jobs (``workers`` > 1) keep the ``TorchTrainer`` path.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ray import tune

from orchestrator.ray_utils import scoped_env
from orchestrator.train_fn import JobResources, JobSpec, ray_storage
from orchestrator.worker import (
    BEST_KEY,
    TuneSink,
    best_score,
    outcome_of,
    report_metrics,
    running_best,
    train_job,
)
from trainers.layout import ray_files

Adjust = Callable[[dict[str, Any]], dict[str, Any]]

JOBS_DIR = "jobs"  # Tune's files for job batches: <store>/_ray/jobs/<batch>

SNAPSHOT_ENV = "TUNE_GLOBAL_CHECKPOINT_S"
TUNE_ENV = {
    # Tune snapshots the experiment every >= 10 s by default; often enough that restore has state.
    SNAPSHOT_ENV: "1",  # sweeps (--resume restores them); job batches use JOBS_SNAPSHOT
    # Ctrl-C raises KeyboardInterrupt at once. Tune's own handler would end fit() "normally"
    # with every trial marked TERMINATED, indistinguishable from a finished sweep.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}

# A job batch's Tune state is thrown away (a rerun starts the batch anew and each run resumes
# from its own saved state), so its driver need not snapshot it every second (a write to the
# storage, S3 on a cluster, per second): Tune's "auto" keeps snapshots under 5% of the time.
JOBS_SNAPSHOT = "auto"


def tune_env() -> None:
    """Set :data:`TUNE_ENV` (unless the user did) before any Tuner runs: Tune installs its
    SIGINT handler on the first ``fit()`` of the process and never removes it."""
    for key, value in TUNE_ENV.items():
        os.environ.setdefault(key, value)


def trains_in_trial(resources: JobResources) -> bool:
    """One worker per job: the trial itself trains (no Train controller, no worker actor)."""
    return resources.workers == 1


def trial_resources(resources: JobResources) -> tune.PlacementGroupFactory:
    """A trial that trains holds its worker's bundle (CPUs, and its GPU on GPU nodes)."""
    return tune.PlacementGroupFactory([resources.bundle()])


def train_in_trial(job: JobSpec, resources: JobResources, adjust: Adjust | None = None,
                   report_epochs: Collection[int] | None = ()) -> dict[str, Any]:
    """Train ``job`` in this trial; the run's saved state is dropped once its record exists.
    ``adjust`` rewrites each report (several seeds in one trial); ``report_epochs`` are the
    trial epochs a scheduler judges at (:class:`~orchestrator.worker.TuneSink`)."""
    sink = TuneSink(job, adjust, report_epochs)
    outcome = train_job(job, resources.gpus_per_worker or 0.0, sink)
    if "diverged" not in outcome:
        sink.clear()
    return outcome


def stored_history(job: JobSpec) -> list[dict[str, Any]] | None:
    """The per-epoch history of the job's finished run, or None."""
    record = job.record()
    return None if record is None else record.history()


def replay(history: Sequence[Mapping[str, Any]], adjust: Adjust | None = None) -> float | None:
    """Report a finished run's stored epochs to Tune as if it trained now (a trial whose run
    is in the store costs nothing); returns the run's best validation score."""
    best = None
    for flat in history:
        best = running_best(best, flat.get("score"))
        metrics = {**report_metrics(flat, best), "reused": 1}
        tune.report(adjust(metrics) if adjust else metrics)
    return best


def across_seeds(metrics: dict[str, Any], offset: int, done: Sequence[float]) -> dict[str, Any]:
    """A report of the trial's next seed: epochs count on from the seeds before (``offset``),
    and ``val_best`` is the mean best validation score of the finished seeds and this one."""
    out = {**metrics, "epoch": int(metrics.get("epoch", 0)) + offset, "seeds_done": len(done)}
    current = metrics.get(BEST_KEY)
    scores = [*done, current] if isinstance(current, float) and math.isfinite(current) else done
    out[BEST_KEY] = sum(scores) / len(scores) if scores else math.nan
    return out


def seeds_in_trial(jobs: Sequence[JobSpec], resources: JobResources,
                   report_epochs: Collection[int] | None = ()) -> None:
    """One trial that trains (or replays) the same configuration for several seeds, one after
    the other: its score is the mean over seeds, so selection is less at the mercy of one
    seed's luck on the validation split. A diverged seed ends the trial (it says so)."""
    done: list[float] = []
    offset = 0
    for job in jobs:
        adjust = functools.partial(across_seeds, offset=offset, done=tuple(done))
        history = stored_history(job)
        if history is None:
            if "diverged" in train_in_trial(job, resources, adjust, report_epochs):
                return
            history = stored_history(job) or []
            best = best_score(history)
        else:
            best = replay(history, adjust)
        if best is not None:
            done.append(best)
        offset += int(history[-1].get("total_epochs") or history[-1]["epoch"]) if history else 0


def _job_trial(config: dict[str, Any], jobs: Mapping[str, JobSpec],
               resources: JobResources) -> None:
    train_in_trial(jobs[config["run"]], resources)


def batch_name(jobs: Sequence[JobSpec]) -> str:
    digest = hashlib.sha256("\n".join(sorted(j.name for j in jobs)).encode()).hexdigest()
    return f"jobs-{digest[:12]}"


def run_in_trials(jobs: Sequence[JobSpec], resources: JobResources,
                  limit: int) -> dict[str, dict[str, Any]]:
    """Train ``jobs`` (distinct runs, one store) as Tune trials, ``limit`` at a time; returns
    per run name its outcome, or ``{"error": ...}`` for a job that failed every retry."""
    if not jobs:
        return {}
    tune_env()
    storage = jobs[0].storage
    by_name = {job.name: job for job in jobs}
    name = batch_name(jobs)
    state = ray_files(storage, JOBS_DIR).child(name)
    if state.is_dir():  # a batch that was interrupted: its runs resume from their own state
        state.delete()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_job_trial, jobs=by_name, resources=resources),
                            trial_resources(resources)),
        param_space={"run": tune.grid_search(list(by_name))},
        tune_config=tune.TuneConfig(max_concurrent_trials=limit, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=tune.RunConfig(name=name, **ray_storage(storage, f"{JOBS_DIR}"),
                                  failure_config=tune.FailureConfig(
                                      max_failures=resources.max_failures),
                                  verbose=0),
    )
    out: dict[str, dict[str, Any]] = {}
    with scoped_env(SNAPSHOT_ENV, JOBS_SNAPSHOT):
        grid = tuner.fit()
    for result in grid:
        run = (result.config or {})["run"]
        if result.error is not None:
            out[run] = {"error": result.error}
        else:
            out[run] = outcome_of(result.metrics or {})
    return out
