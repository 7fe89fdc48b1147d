"""The thin adapter between Ray Train and ``trainers``: the per-worker function and its driver.

The worker builds the dataset itself from a :class:`DataRef` (data never travels through the
object store), runs the one training loop with a callback that sends epochs to
``ray.train.report`` (at most one report per 5 s, see :func:`report_interval_s`) together with
the loop's resumable state as a checkpoint, and resumes from
``ray.train.get_checkpoint()`` after a worker failure. A finished run is written to the run store
in the layout of :mod:`trainers.runs` (``<storage>/<run_name>/model.pt`` + ``result.json``, the
record last), through :mod:`trainers.storage`, so the storage may be a local folder, a shared
mount or an object store, and a run trained on Ray is reused locally and vice versa. The rank-0
return value carries the outcome
(V2 ``Result.metrics`` only reflects checkpointed reports, docs/ray.md, point 3).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train.torch import TorchConfig, TorchTrainer

from orchestrator.capacity import (
    check_fits,
    cluster_capacity,
    max_jobs,
    resolve_gpus,
    worker_bundle,
)
from trainers.api import evaluate_splits, train
from trainers.checkpoint import resolving
from trainers.config import ConfigError, TrainConfig
from trainers.data import DataBundle, create_dataset, list_datasets
from trainers.data.contract import DatasetSpec
from trainers.distributed import world
from trainers.layout import ray_files
from trainers.loop import EpochReport, TrainingDiverged
from trainers.runs import RunRecord, load_record, run_name, save_run
from trainers.storage import Storage

STATE_FILE = "loop_state.pt"
BEST_KEY = "val_best"  # running best validation selection score: what sweeps optimise
RAY_DIR = "_ray"  # Ray's own files (Train runs, Tune experiments) under the storage path
EVAL_SPLITS = ("train", "val", "test")
REPORT_INTERVAL_ENV = "FUSION_REPORT_INTERVAL_S"
DEFAULT_REPORT_INTERVAL_S = 5.0
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


# --- worker side --------------------------------------------------------------------------------


def running_best(best: float | None, score: float | None) -> float | None:
    if score is None:
        return best
    return score if best is None else max(best, score)


def report_metrics(flat: Mapping[str, Any], best: float | None) -> dict[str, Any]:
    """What goes to Ray per epoch: the flat report without empty values, plus ``val_best``.

    Before the first validation score (ReconBoost's first boosting phase) ``val_best`` is NaN:
    Tune and Optuna need the metric in every result, and ASHA never stops a trial on NaN.
    """
    out = {k: v for k, v in flat.items() if v is not None}
    out[BEST_KEY] = math.nan if best is None else best
    return out


def report_interval_s() -> float:
    """Least seconds between two reports (``$FUSION_REPORT_INTERVAL_S``, default 5; 0 = every
    epoch). Train V2 holds ONE unconsumed report per worker and its controller collects it only
    every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, so a report per short epoch would stall every
    epoch until the next poll, and a report (checkpoint included) costs about 0.1 s here:
    spacing reports out keeps short epochs at plain-PyTorch speed (benchmarks/overhead.py).
    Epochs longer than the interval are each reported, checkpoint and all."""
    raw = os.environ.get(REPORT_INTERVAL_ENV, str(DEFAULT_REPORT_INTERVAL_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{REPORT_INTERVAL_ENV} must be a number of seconds >= 0 but got "
                          f"{raw!r}; unset it for the default {DEFAULT_REPORT_INTERVAL_S:g}")
    return value


class RayReporter:
    """Loop callback: ``ray.train.report`` with the loop state as checkpoint, at most once per
    :func:`report_interval_s` and always after the last epoch. ``val_best`` is a running best
    and ``epoch`` counts epochs, so a report that sums up several epochs loses nothing that
    Tune, Optuna or ASHA (``time_attr="epoch"``) look at."""

    def __init__(self, job: JobSpec, history: Sequence[Mapping[str, Any]]) -> None:
        self.job = job
        self.best: float | None = None
        # Several workers must report the same epochs (a report is collective): every epoch.
        self.interval = report_interval_s() if world()[1] == 1 else 0.0
        self.last_report = time.monotonic()
        for past in history:
            self.best = running_best(self.best, past.get("score"))

    def on_epoch_end(self, report: EpochReport, state: Callable[[], dict[str, Any]]) -> None:
        self.best = running_best(self.best, report.score)
        if self._due(report):
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if world()[0] == 0:  # the workers hold the same weights: rank 0's is enough
                    torch.save(state(), Path(tmp) / STATE_FILE)
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(report_metrics(report.flat(), self.best), checkpoint=checkpoint)
            self.last_report = time.monotonic()
        self._fault_drill(report.epoch)

    def _due(self, report: EpochReport) -> bool:
        return (report.epoch >= report.total_epochs or report.epoch == self.job.fail_once_at_epoch
                or time.monotonic() - self.last_report >= self.interval)

    def _fault_drill(self, epoch: int) -> None:
        marker, store = self.job.fail_marker, self.job.storage
        if epoch == self.job.fail_once_at_epoch and not store.is_file(*marker):
            store.write_text(f"crashed after epoch {epoch}\n", *marker)
            raise RuntimeError(f"fault drill: worker of {self.job.name} crashes after epoch "
                               f"{epoch}")


def restored_state() -> dict[str, Any] | None:
    """The loop state of the last reported checkpoint, when Train restarted this run."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def _threads(cfg: TrainConfig) -> TrainConfig:
    """One torch thread per CPU granted to the worker (``num_threads`` is not part of the name)."""
    if cfg.num_threads:
        return cfg
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return cfg.replace(num_threads=max(1, int(cpus)))


def require_cuda(gpus: float) -> None:
    """A worker given a GPU trains on it or fails in one line (never silently on the CPU)."""
    if gpus > 0 and not torch.cuda.is_available():
        node = ray.get_runtime_context().get_node_id()[:8]
        raise RuntimeError(f"no usable CUDA device: this worker on node {node} was given "
                           f"{gpus:g} GPU(s) but torch {torch.__version__} sees none "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                           "install a CUDA build of torch and the NVIDIA driver on GPU nodes, "
                           "or pass --gpus-per-job 0")


def train_fn_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Train ``loop_config["job"]``; returns the outcome (rank 0 writes the run store)."""
    job: JobSpec = loop_config["job"]
    require_cuda(float(loop_config.get("gpus", 0.0)))
    data = job.data.load()
    resume = restored_state()
    history = resume["history"] if resume else []
    outcome = {"node_id": ray.get_runtime_context().get_node_id(), "name": job.name,
               "resumed_from": int(resume["epoch"]) if resume else 0}
    t0 = time.perf_counter()
    try:
        with resolving(job.storage):
            strategy, result = train(data, _threads(job.config), [RayReporter(job, history)],
                                     resume)
    except TrainingDiverged as err:
        return {**outcome, "diverged": str(err)}
    metrics = evaluate_splits(strategy, data, job.splits)
    wall = time.perf_counter() - t0 + (history[-1]["wall_time_s"] if history else 0.0)
    if ray.train.get_context().get_world_rank() == 0:
        save_run(job.storage, job.name, strategy, metrics, result.epochs_run, wall,
                 [r.flat() for r in result.history])
    return {**outcome, "epochs": result.epochs_run, "wall_time_s": wall}


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


def finished_record(job: JobSpec, result: ray.train.Result) -> RunRecord:
    """The run store record a successful job wrote; raises when the loss diverged."""
    outcome = result.return_value or {}
    if "diverged" in outcome:
        raise TrainingDiverged(f"{job.label or job.name}: {outcome['diverged']}")
    record = job.record()
    if record is None:
        raise RuntimeError(f"{job.name}: Train finished but wrote no run record under "
                           f"{job.location}; is the storage shared by all nodes?")
    return replace(record, reused=False)
