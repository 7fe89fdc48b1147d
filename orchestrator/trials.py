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

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ray import tune

from orchestrator.train_fn import RAY_DIR, JobResources, JobSpec, ray_storage
from orchestrator.worker import TuneSink, outcome_of, train_job

JOBS_DIR = "jobs"  # Tune's files for job batches: <store>/_ray/jobs/<batch>

TUNE_ENV = {
    # Tune snapshots the experiment every >= 10 s by default; often enough that restore has state.
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    # Ctrl-C raises KeyboardInterrupt at once. Tune's own handler would end fit() "normally"
    # with every trial marked TERMINATED, indistinguishable from a finished sweep.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}


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


def train_in_trial(job: JobSpec, resources: JobResources) -> dict[str, Any]:
    """Train ``job`` in this trial; the run's saved state is dropped once its record exists."""
    sink = TuneSink(job)
    outcome = train_job(job, resources.gpus_per_worker or 0.0, sink)
    if "diverged" not in outcome:
        sink.clear()
    return outcome


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
    state = storage.child(RAY_DIR, JOBS_DIR, name)
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
    for result in tuner.fit():
        run = (result.config or {})["run"]
        if result.error is not None:
            out[run] = {"error": result.error}
        else:
            out[run] = outcome_of(result.metrics or {})
    return out
