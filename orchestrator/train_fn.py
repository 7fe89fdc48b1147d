"""Jobs, their resources and how Ray runs them: a Tune trial or a ``TorchTrainer``.

A :class:`JobSpec` is one training run; its worker builds the dataset itself from a
:class:`DataRef` (data never travels through the object store) and runs
:func:`orchestrator.worker.train_job`. A single-worker job runs inside a Tune trial that trains
itself (:func:`orchestrator.trials.run_in_trials`: warm trial processes, no Train controller to
start per job); a data-parallel job (``workers`` > 1) is one ``TorchTrainer`` run
(:func:`fit_job`). A finished run is written to the run store in the layout of
:mod:`trainers.runs` (``<storage>/<run_name>/model.pt`` + ``result.json``, the record last),
through :mod:`trainers.storage`, so the storage may be a local folder, a shared mount or an
object store, and a run trained on Ray is reused locally and vice versa. The rank-0 return
value of a Train run carries the outcome (V2 ``Result.metrics`` only reflects checkpointed
reports, docs/ray.md, point 3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from orchestrator.capacity import (
    check_fits,
    cluster_capacity,
    max_jobs,
    resolve_gpus,
    worker_bundle,
)
from orchestrator.worker import (
    BEST_KEY,
    RAY_DIR,
    train_fn_per_worker,
)
from trainers.config import ConfigError, TrainConfig
from trainers.data import DataBundle, create_dataset, list_datasets
from trainers.data.contract import DatasetSpec
from trainers.layout import ray_files
from trainers.loop import TrainingDiverged
from trainers.runs import RunRecord, load_record, run_name
from trainers.storage import Storage

__all__ = ["BEST_KEY", "RAY_DIR", "DataRef", "JobResources", "JobSpec", "finished_record",
           "fit_job", "make_job", "ray_storage"]

EVAL_SPLITS = ("train", "val", "test")
CONTROLLER_FAILURE_LIMIT = 20


@dataclass(frozen=True)
class DataRef:
    """A dataset by registered name and factory arguments: all a worker needs to build it."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in list_datasets():
            raise ConfigError(f"unknown dataset {self.name!r}; valid datasets: "
                              f"{', '.join(list_datasets())}")
        object.__setattr__(self, "kwargs", dict(self.kwargs))

    def load(self) -> DataBundle:
        return create_dataset(self.name, **self.kwargs)


@dataclass(frozen=True)
class JobSpec:
    """One training run: what to train, where its results go, and which splits it scores.

    ``fail_once_at_epoch`` is a fault drill: the worker crashes once right after reporting that
    epoch (a marker file records that it did), and Train must resume it from the checkpoint.
    """

    data: DataRef
    config: TrainConfig
    name: str  # trainers.runs.run_name(spec, config)
    storage: Storage  # the run store (local folder or object storage)
    splits: tuple[str, ...] = ("val", "test")
    label: str = ""  # for progress lines, e.g. "unimodal:m1 seed 0"
    fail_once_at_epoch: int = 0

    def __post_init__(self) -> None:
        bad = [s for s in self.splits if s not in EVAL_SPLITS]
        if bad or not self.splits:
            raise ConfigError(f"JobSpec splits must be a non-empty subset of {list(EVAL_SPLITS)} "
                              f"but got {self.splits!r}")
        if self.fail_once_at_epoch < 0:
            raise ConfigError(f"JobSpec fail_once_at_epoch cannot be negative but got "
                              f"{self.fail_once_at_epoch!r}; use 0 for no fault drill")

    @property
    def location(self) -> str:
        return self.storage.uri(self.name)

    def record(self) -> RunRecord | None:
        return load_record(self.storage, self.name)

    @property
    def fail_marker(self) -> tuple[str, str]:
        return RAY_DIR, f"{self.name}.failed-once"


def make_job(data: DataRef, spec: DatasetSpec, cfg: TrainConfig,
             storage: str | Path | Storage, **kw: Any) -> JobSpec:
    """A job named with :func:`trainers.runs.run_name`, the one naming function."""
    return JobSpec(data, cfg, run_name(spec, cfg), Storage.open(storage), **kw)


@dataclass(frozen=True)
class JobResources:
    """Resources of one job's Train workers and its retry budget.

    ``gpus_per_worker=None`` means auto: one GPU per worker when the cluster has GPUs or its
    autoscaler can add nodes that have them, else none (:meth:`resolved` decides, once Ray is
    up). ``workers`` > 1 trains one backbone data-parallel (DDP, each worker a shard).
    """

    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    workers: int = 1
    max_failures: int = 2

    def __post_init__(self) -> None:
        if not (isinstance(self.cpus_per_worker, int | float) and math.isfinite(
                self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise ConfigError(f"--cpus-per-job must be a positive number but got "
                              f"{self.cpus_per_worker!r}; fractions like 0.5 are fine")
        gpus = self.gpus_per_worker
        if gpus is not None and not (isinstance(gpus, int | float) and math.isfinite(gpus)
                                     and gpus >= 0):
            raise ConfigError(f"--gpus-per-job must be auto or a number >= 0 but got {gpus!r}; "
                              "use 0 for CPU-only jobs")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"--workers-per-job must be an integer >= 1 but got "
                              f"{self.workers!r}; use 1 for one worker per job")
        if self.max_failures < -1:
            raise ConfigError(f"max_failures must be >= -1 (-1: retry forever) but got "
                              f"{self.max_failures!r}")

    def bundle(self) -> dict[str, float]:
        return worker_bundle(self.cpus_per_worker, self.gpus_per_worker or 0.0)

    def resolved(self) -> JobResources:
        """GPUs decided (auto -> 0 or 1) and checked against what the cluster can scale to:
        a worker that fits on no node, up now or addable, is a one-line error (not a hang)."""
        capacity = cluster_capacity()
        done = replace(self, gpus_per_worker=resolve_gpus(self.gpus_per_worker, capacity))
        check_fits(done.bundle(), capacity)
        return done

    def max_jobs(self) -> int:
        """Jobs that run at once on the fully scaled cluster (nodes up now count once more
        when the autoscaler may still add their type: an upper bound, Ray queues the rest)."""
        return max_jobs(self.bundle(), cluster_capacity(), self.workers)

    def scaling(self) -> ray.train.ScalingConfig:
        gpus = self.gpus_per_worker or 0.0
        return ray.train.ScalingConfig(num_workers=self.workers, use_gpu=gpus > 0,
                                       resources_per_worker=self.bundle())


# --- driver side --------------------------------------------------------------------------------


def ray_storage(storage: Storage, kind: str) -> dict[str, Any]:
    """``storage_path`` and ``storage_filesystem`` for Ray Train or Tune (``kind``): Ray's own
    files live under ``<root>/_ray/<kind>`` (:func:`trainers.layout.ray_files`), on the same
    filesystem as the run store."""
    where = ray_files(storage, kind)
    if where.is_local:
        return {"storage_path": where.root}
    return {"storage_path": where.root, "storage_filesystem": where.fs}


def fit_job(job: JobSpec, resources: JobResources,
            callbacks: Sequence[Any] = ()) -> ray.train.Result:
    """Run ``job`` as a one-worker ``TorchTrainer``. The Train run is named after the run, so
    rerunning an interrupted job resumes it from its last checkpoint (Train V2 semantics)."""
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"job": job, "gpus": resources.gpus_per_worker or 0.0},
        scaling_config=resources.scaling(),
        # One worker needs no collective: gloo then, so that a GPU node whose CUDA is broken
        # reaches require_cuda's one-line error instead of failing NCCL set-up in a retry loop.
        torch_config=TorchConfig(backend="gloo") if resources.workers == 1 else None,
        run_config=ray.train.RunConfig(
            name=job.name,
            **ray_storage(job.storage, "train"),
            failure_config=ray.train.FailureConfig(
                max_failures=resources.max_failures,
                # A worker group that cannot start (no node fits) is a controller failure, and
                # Ray retries those forever; capacity is checked before any job starts, so a
                # bounded number of retries still waits out an autoscaler adding a node.
                controller_failure_limit=CONTROLLER_FAILURE_LIMIT),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )
    return trainer.fit()


def finished_record(job: JobSpec, result: ray.train.Result | Mapping[str, Any]) -> RunRecord:
    """The run store record a successful job wrote (``result``: a Train result or the outcome
    of :func:`orchestrator.worker.train_job`); raises when the loss diverged."""
    outcome = result if isinstance(result, Mapping) else (result.return_value or {})
    if "diverged" in outcome:
        raise TrainingDiverged(f"{job.label or job.name}: {outcome['diverged']}")
    record = job.record()
    if record is None:
        raise RuntimeError(f"{job.name}: training finished but wrote no run record under "
                           f"{job.location}; is the storage shared by all nodes?")
    return replace(record, reused=False)
