"""Many independent training jobs at once: reuse what is finished, train the rest concurrently.

A single-worker job is a Tune trial that trains itself (:mod:`orchestrator.trials`: the jobs of
one call are one Tune experiment with warm, reused trial processes). A data-parallel job is one
Ray Train ``TorchTrainer`` run; Train has no multi-job API, so each such job gets a Ray task as its
driver (docs/ray.md, point 2); the tasks take no CPU and a sliver of a head-only resource,
because ``fit()`` puts the Train controller on the caller's node and a controller must not live
on a GPU or spot worker that the autoscaler may remove. At most as many jobs run as the cluster
has GPUs (or CPUs / ``cpus_per_worker``), so no job waits so long for its worker that Train gives
up on it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import ray

from orchestrator.ray_utils import driver_resources
from orchestrator.train_fn import (
    DataRef,
    JobResources,
    JobSpec,
    finished_record,
    fit_job,
    make_job,
)
from orchestrator.trials import run_in_trials, trains_in_trial
from trainers.compare import unimodal_configs, val_score_text
from trainers.config import TrainConfig
from trainers.data import DataBundle
from trainers.layout import default_root
from trainers.runs import RunRecord
from trainers.storage import Storage, StorageError

LOG = logging.getLogger(__name__)
__all__ = ["StorageError", "default_storage", "prepare_storage", "run_jobs", "train_unimodal"]


class JobsFailed(RuntimeError):
    """Some jobs failed; the message lists them (the other jobs finished)."""


def default_storage() -> str:
    """The storage root of every command (:mod:`trainers.layout`): ``$FUSION_STORAGE`` or
    ``./fusion-results``."""
    return default_root()


def prepare_storage(location: str | Path) -> Storage:
    """The storage (a folder or an object-store URI), created and checked writable: a missing
    bucket, missing credentials or an endpoint that does not answer is a one-line error."""
    return Storage.open(location).check_writable()


def max_concurrent(resources: JobResources) -> int:
    """How many jobs fit at once on the cluster scaled up as far as its autoscaler may go."""
    return resources.max_jobs()


def resolve_resources(resources: JobResources) -> JobResources:
    """GPUs per worker decided for this cluster and the worker checked to fit on some node;
    says once what was decided."""
    done = resources.resolved()
    if done != resources:
        _say(f"{done.gpus_per_worker:g} GPU(s) per training worker (--gpus-per-job auto)")
    return done


def _fit_remote(job: JobSpec, resources: JobResources) -> tuple[RunRecord, str]:
    result = fit_job(job, resources)
    return finished_record(job, result), (result.return_value or {}).get("node_id", "?")


def _say(text: str) -> None:
    LOG.info(f"[jobs] {text}")


def _done_line(job: JobSpec, record: RunRecord, node: str) -> str:
    return (f"trained {job.label or job.name} ({job.name}) on node {node} in "
            f"{record.wall_time_s:.1f} s{val_score_text(record)}")


def run_jobs(jobs: Sequence[JobSpec], resources: JobResources,
             limit: int | None = None) -> list[RunRecord]:
    """One record per job, in order: finished runs are reused, the others trained on Ray."""
    resources = resolve_resources(resources)
    records: dict[str, RunRecord] = {}
    todo: dict[str, JobSpec] = {}
    for job in jobs:
        found = job.record()
        if found is not None:
            records[job.name] = found
        elif job.name not in todo:
            todo[job.name] = job
    if records:
        _say(f"reusing {len(records)} finished run(s) from {jobs[0].storage}")
    records.update(_train_all(list(todo.values()), resources, limit or max_concurrent(resources)))
    return [records[job.name] for job in jobs]


def _train_all(todo: list[JobSpec], resources: JobResources, limit: int) -> dict[str, RunRecord]:
    if trains_in_trial(resources):
        for job in todo:
            _say(f"training {job.label or job.name} ({job.name})")
        outcomes = run_in_trials(todo, resources, limit)
        done: dict[str, RunRecord] = {}
        failed: list[str] = []
        for job in todo:
            outcome = outcomes.get(job.name, {"error": RuntimeError("no result from Tune")})
            try:
                if "error" in outcome:
                    raise outcome["error"]
                record = finished_record(job, outcome)
            except Exception as err:  # noqa: BLE001 - every job's failure is reported
                _failed(job, err, failed)
                continue
            done[job.name] = record
            _say(_done_line(job, record, outcome.get("node_id", "?")))
        return _check(done, failed)
    return _train_with_train(todo, resources, limit)


def _failed(job: JobSpec, err: BaseException, failed: list[str]) -> None:
    cause = getattr(err, "cause", None) or err
    failed.append(f"{job.label or job.name}: {root_line(cause)}")
    LOG.error(f"[jobs] FAILED {job.label or job.name}: {type(cause).__name__}: {cause}")


def _check(done: dict[str, RunRecord], failed: list[str]) -> dict[str, RunRecord]:
    if failed:
        raise JobsFailed(f"{len(failed)} job(s) failed; first: {failed[0]}")
    return done


def _train_with_train(todo: list[JobSpec], resources: JobResources,
                      limit: int) -> dict[str, RunRecord]:
    """Data-parallel jobs: one TorchTrainer each, driven by a Ray task on the head."""
    remote = ray.remote(num_cpus=0)(_fit_remote).options(resources=driver_resources())
    pending: dict[ray.ObjectRef, JobSpec] = {}
    done: dict[str, RunRecord] = {}
    failed: list[str] = []
    while todo or pending:
        while todo and len(pending) < limit:
            job = todo.pop(0)
            _say(f"training {job.label or job.name} ({job.name})")
            pending[remote.remote(job, resources)] = job
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        try:
            record, node = ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:
            _failed(job, err, failed)
            continue
        done[job.name] = record
        _say(_done_line(job, record, node))
    return _check(done, failed)


def root_line(err: BaseException) -> str:
    """The line that says what went wrong: the innermost ``SomeError: message`` of a (Ray
    Train) error whose text wraps the worker's traceback."""
    text = f"{type(err).__name__}: {err}"
    found = [ln.strip() for ln in text.splitlines()
             if re.match(r"^\s*[A-Za-z_.]*(Error|Exception|Diverged)\b.*: \S", ln)]
    return (found or [text.splitlines()[0]])[-1][:400]


def unimodal_jobs(data_ref: DataRef, data: DataBundle, base: TrainConfig, seeds: Sequence[int],
                  storage: str | Path | Storage) -> dict[tuple[int, str], JobSpec]:
    """One job per (seed, modality): each modality's backbone trained on its own."""
    return {(seed, m): make_job(data_ref, data.spec, cfg, storage,
                                label=f"unimodal:{m} seed {seed}")
            for seed in seeds
            for m, cfg in unimodal_configs(data, base.replace(seed=seed)).items()}


def train_unimodal(data_ref: DataRef, data: DataBundle, base: TrainConfig, seeds: Sequence[int],
                   storage: str | Path | Storage, resources: JobResources
                   ) -> dict[int, dict[str, RunRecord]]:
    """Finished unimodal runs per seed and modality, all (missing) modalities trained at once."""
    jobs = unimodal_jobs(data_ref, data, base, seeds, storage)
    records = run_jobs(list(jobs.values()), resources)
    out: dict[int, dict[str, RunRecord]] = {}
    for (seed, m), rec in zip(jobs, records, strict=True):
        out.setdefault(seed, {})[m] = rec
    return out


def checkpoints(records: Mapping[str, RunRecord]) -> dict[str, str]:
    """modality -> name of its finished unimodal run (UME members, UMT teachers...)."""
    return {m: r.name for m, r in records.items()}
