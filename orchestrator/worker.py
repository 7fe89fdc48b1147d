"""Training one run inside a Ray process: a Ray Train worker, or a Tune trial that trains itself.

Both run :func:`train_job`: build the dataset from the job's ``DataRef``, resume from the last
saved loop state, run the one training loop with a :class:`RayReporter`, evaluate, write the
run store (record last), and say how it went. They differ only in their :class:`Sink`,
where reports and the resumable state go:

* :class:`TrainSink` (multi-worker jobs, one ``TorchTrainer`` each): ``ray.train.report`` with the
  loop state as a Train checkpoint; Train restarts failed workers from it.
* :class:`TuneSink` (single-worker jobs and trials: the trial process IS the worker, so a job
  costs its training, not the start of a Train controller and a worker that import torch):
  metrics go to ``tune.report`` and the loop state is written to the run store's
  ``<root>/_ray/state/<run>.pt``, keyed by run name. A trial that Tune retries after a failure, a
  sweep resumed with ``--resume`` and a rerun of an interrupted script all resume the run
  from there. (Train's local mode, ``ScalingConfig(num_workers=0)``, is no help inside
  a Tune trial: Ray 2.60 refuses ``ray.train`` calls in a function run by Tune.)

The record of a finished run is written before the run's final report, so a sweep stopped at
any moment (Ctrl-C) never counts a trial as finished whose run is not in the store.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import ray
import ray.train
import torch
from ray import tune

from trainers.api import evaluate_splits, train
from trainers.checkpoint import resolving
from trainers.config import ConfigError, TrainConfig
from trainers.data import DataBundle, create_dataset
from trainers.distributed import world
from trainers.layout import ray_files
from trainers.loop import EpochReport, TrainingDiverged
from trainers.runs import save_run

if TYPE_CHECKING:
    from orchestrator.train_fn import DataRef, JobSpec

RAY_DIR = "_ray"  # Ray's own files (Train runs, Tune experiments) under the storage path
STATE_FILE = "loop_state.pt"
STATE_DIR = "state"  # under the run store's _ray folder: <store>/_ray/state/<run>.pt
BEST_KEY = "val_best"  # running best validation selection score: what sweeps optimise
REPORT_INTERVAL_ENV = "FUSION_REPORT_INTERVAL_S"
DEFAULT_REPORT_INTERVAL_S = 5.0
OUTCOME = "job/"  # prefix of the outcome keys in a run's final report


def running_best(best: float | None, score: float | None) -> float | None:
    if score is None:
        return best
    return score if best is None else max(best, score)


def best_score(history: Sequence[Mapping[str, Any]]) -> float | None:
    """The best validation score of a run's per-epoch history (None before any)."""
    best = None
    for past in history:
        best = running_best(best, past.get("score"))
    return best


def report_metrics(flat: Mapping[str, Any], best: float | None) -> dict[str, Any]:
    """What goes to Ray per epoch: the flat report without empty values, plus ``val_best``.

    Before the first validation score (ReconBoost's first boosting phase) ``val_best`` is NaN:
    Tune and Optuna need the metric in every result, and ASHA never stops a trial on NaN.
    """
    out = {k: v for k, v in flat.items() if v is not None}
    out[BEST_KEY] = math.nan if best is None else best
    return out


def report_interval_s() -> float:
    """Least seconds between two saved loop states (``$FUSION_REPORT_INTERVAL_S``, default 5;
    0 = every epoch). Train V2 holds ONE unconsumed report per worker and its controller
    collects it only every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, so a Train report per short
    epoch would stall every epoch until the next poll, and saving the state costs about 0.1 s
    here: spacing them out keeps short epochs at plain-PyTorch speed (benchmarks/overhead.py).
    Epochs longer than the interval each save the state."""
    raw = os.environ.get(REPORT_INTERVAL_ENV, str(DEFAULT_REPORT_INTERVAL_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{REPORT_INTERVAL_ENV} must be a number of seconds >= 0 but got "
                          f"{raw!r}; unset it for the default {DEFAULT_REPORT_INTERVAL_S:g}")
    return value


class Sink(Protocol):
    """Where a worker's reports and resumable loop state go."""

    trial: bool  # a Tune trial (True): it must hear how the run ended, diverged or not

    def rank(self) -> int: ...

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None: ...

    def wants(self, metrics: Mapping[str, Any]) -> bool:
        """Whether an epoch that is not due for a saved state must still be reported (the
        epochs a Tune scheduler judges trials at)."""
        ...

    def restored(self) -> dict[str, Any] | None: ...


class TrainSink:
    """A Ray Train worker: reports and states go to Train (a state is a Train checkpoint)."""

    trial = False

    def rank(self) -> int:
        return ray.train.get_context().get_world_rank()

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if state is not None:
                torch.save(state, Path(tmp) / STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)

    def wants(self, metrics: Mapping[str, Any]) -> bool:
        return False  # Train's reports follow the interval (Tune sees them via its callback)

    def restored(self) -> dict[str, Any] | None:
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as folder:
            return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


class TuneSink:
    """A Tune trial that trains itself: metrics to Tune, the state to the run store.

    ``report_epochs`` are the trial's epochs (after ``adjust``) that Tune must hear about even
    when no state is due: ASHA's rungs, so that a trial shorter than one report interval can
    still be stopped early. ``None``: every epoch (a scheduler we know nothing about)."""

    trial = True

    def __init__(self, job: JobSpec,
                 adjust: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 report_epochs: Collection[int] | None = ()) -> None:
        self.store = ray_files(job.storage, STATE_DIR)
        self.file = f"{job.name}.pt"
        self.adjust = adjust or (lambda metrics: metrics)  # e.g. several seeds in one trial
        self.report_epochs = None if report_epochs is None else frozenset(report_epochs)

    def rank(self) -> int:
        return 0

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is not None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            self.store.write_bytes(buffer.getvalue(), self.file)  # all or nothing
        tune.report(self.adjust(metrics))

    def wants(self, metrics: Mapping[str, Any]) -> bool:
        if self.report_epochs is None:
            return True
        return int(self.adjust(dict(metrics)).get("epoch", 0)) in self.report_epochs

    def restored(self) -> dict[str, Any] | None:
        if not self.store.is_file(self.file):
            return None
        return torch.load(io.BytesIO(self.store.read_bytes(self.file)), map_location="cpu",
                          weights_only=True)

    def clear(self) -> None:
        if self.store.is_file(self.file):
            self.store.delete(self.file)


class RayReporter:
    """Loop callback: metrics and the loop state to the sink at most once per
    :func:`report_interval_s` (a report waits for Ray to take it: a Train controller's poll, a
    Tune driver's round trip); the last epoch is held back for
    :func:`train_job` to report once the run is in the store. ``val_best`` is a running best
    and ``epoch`` counts epochs, so a report that sums up several epochs loses nothing that
    Tune, Optuna or ASHA (``time_attr="epoch"``) look at."""

    def __init__(self, job: JobSpec, history: Sequence[Mapping[str, Any]],
                 sink: Sink | None = None) -> None:
        self.job = job
        self.sink: Sink = sink or TrainSink()
        self.best = best_score(history)
        self.final: dict[str, Any] | None = None  # the last epoch's metrics, not yet reported
        # Several workers must report the same epochs (a report is collective): every epoch.
        self.interval = report_interval_s() if world()[1] == 1 else 0.0
        self.last_report = time.monotonic()
        # the latest epoch's metrics (a resumed run's last epoch until it trains one more)
        self.last = report_metrics(history[-1] if history else {}, self.best)

    def on_epoch_end(self, report: EpochReport, state: Callable[[], dict[str, Any]]) -> None:
        self.best = running_best(self.best, report.score)
        metrics = self.last = report_metrics(report.flat(), self.best)
        if report.epoch >= report.total_epochs and world()[1] == 1:
            self.final = metrics
        elif self._due(report):
            self.sink.report(metrics, state() if self.sink.rank() == 0 else None)
            self.last_report = time.monotonic()
        elif self.sink.wants(metrics):  # a scheduler's rung: metrics only, no state
            self.sink.report(metrics, None)
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


@functools.lru_cache(maxsize=2)
def _dataset(name: str, kwargs_json: str) -> DataBundle:
    return create_dataset(name, **json.loads(kwargs_json))


def load_data(ref: DataRef) -> DataBundle:
    """The job's dataset, built once per process: a warm trial process that trains the next
    job on the same data (Tune ``reuse_actors``) does not build it again."""
    try:
        key = json.dumps(dict(ref.kwargs), sort_keys=True)
    except TypeError:  # arguments that are not JSON (a Path...): built every time
        return ref.load()
    return _dataset(ref.name, key)


def train_job(job: JobSpec, gpus: float, sink: Sink) -> dict[str, Any]:
    """Train ``job`` (resuming its saved state); rank 0 writes the run store, then the final
    report, which carries the outcome as ``job/...`` keys. Returns the outcome: node, resumed
    epoch, epochs and wall time, or ``diverged``."""
    require_cuda(gpus)
    data = load_data(job.data)
    resume = sink.restored()
    history = resume["history"] if resume else []
    outcome: dict[str, Any] = {"node_id": ray.get_runtime_context().get_node_id(),
                               "name": job.name,
                               "resumed_from": int(resume["epoch"]) if resume else 0}
    reporter = RayReporter(job, history, sink)
    t0 = time.perf_counter()
    try:
        with resolving(job.storage):
            strategy, result = train(data, _threads(job.config), [reporter], resume)
    except TrainingDiverged as err:
        outcome["diverged"] = str(err)
        if sink.trial:  # Tune must hear it (a retry would diverge again)
            sink.report(final_report(reporter.last, outcome), None)
        return outcome
    metrics = evaluate_splits(strategy, data, job.splits)
    wall = time.perf_counter() - t0 + (history[-1]["wall_time_s"] if history else 0.0)
    outcome.update(epochs=result.epochs_run, wall_time_s=wall)
    if sink.rank() == 0:
        save_run(job.storage, job.name, strategy, metrics, result.epochs_run, wall,
                 [r.flat() for r in result.history])
        if reporter.final is not None or sink.trial:  # only now: the run is stored
            sink.report(final_report(reporter.final or reporter.last, outcome), None)
    return outcome


def final_report(metrics: Mapping[str, Any], outcome: Mapping[str, Any]) -> dict[str, Any]:
    return {**metrics, **{f"{OUTCOME}{k}": v for k, v in outcome.items()}}


def outcome_of(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The outcome that :func:`train_job` put in its final report ({} if it never got there)."""
    return {k[len(OUTCOME):]: v for k, v in metrics.items() if k.startswith(OUTCOME)}


def train_fn_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's per-worker function: :func:`train_job` with Train as the sink."""
    return train_job(loop_config["job"], float(loop_config.get("gpus", 0.0)), TrainSink())
