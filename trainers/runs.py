"""Deterministic run names and the store of finished runs (local folder or object storage).

A run is named from (dataset, dataset version, strategy, modality, backbone, hyper-parameters,
seed): no timestamps, so a rerun finds the finished run and reuses it instead of training again.
The orchestrator names its Ray jobs with the same function, so local and cluster runs line up.
Layout: ``<store>/<run_name>/model.pt`` (weights) and ``result.json`` (metrics, history). The
record is written last: a run counts as finished only when its ``result.json`` exists, and both
files are written all-or-nothing (:mod:`trainers.storage`), on a local disk and in S3 alike.

Runs that depend on other runs (UME/UniCat members, UMT teachers, ReconBoost warm starts) name
them by **run name** in their params, never by file path, so the same run has the same name
locally, on Ray and in a moved or copied store. :func:`resolving` makes a store the place where
those names are looked up while a strategy is built
(:func:`trainers.checkpoint.resolve_dependency`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.api import evaluate_splits, train
from trainers.checkpoint import MODEL_FILE, RECORD_FILE, checkpoint_bytes, resolving
from trainers.config import TrainConfig
from trainers.data.contract import DataBundle, DatasetSpec
from trainers.storage import Storage

# Settings that do not change what is learned are left out of the run's identity.
NOT_IDENTITY = ("device", "num_threads")


def run_identity(spec: DatasetSpec, cfg: TrainConfig) -> dict[str, Any]:
    """What a run's name hashes: the data (``spec.identity``: registered dataset, its arguments
    and a fingerprint of what was loaded, see :mod:`trainers.data.identity`) and the config, so
    other data or other dataset arguments never reuse a run."""
    ident = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IDENTITY}
    return {"dataset": spec.name, "dataset_version": spec.version, "data": spec.identity,
            "config": ident}


def run_name(spec: DatasetSpec, cfg: TrainConfig) -> str:
    """``<dataset>-<strategy>[-<modality>]-<hash>-s<seed>``, stable across machines."""
    digest = hashlib.sha256(json.dumps(run_identity(spec, cfg), sort_keys=True,
                                       default=str).encode()).hexdigest()[:10]
    modality = cfg.params.get("modality")
    parts = [spec.name, cfg.strategy] + ([modality] if modality else []) + [digest, f"s{cfg.seed}"]
    return "-".join(parts)


@dataclass(frozen=True)
class RunRecord:
    name: str
    store: Storage  # the run store that holds it
    metrics: dict[str, Any]  # split -> key -> metric -> value
    epochs: int
    wall_time_s: float
    reused: bool

    @property
    def location(self) -> str:
        """The run's folder, as a path or URI (for messages)."""
        return self.store.uri(self.name)

    @property
    def checkpoint(self) -> Path:
        """A local path of ``model.pt`` (fetched once per node from a remote store)."""
        return self.store.local_copy(self.name, MODEL_FILE)

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.store.read_text(self.name, RECORD_FILE))["history"]


def load_record(store: str | Path | Storage, name: str) -> RunRecord | None:
    """The finished run ``name`` in ``store``, or None when there is none (or it is incomplete)."""
    store = Storage.open(store)
    if not store.is_file(name, RECORD_FILE):
        return None
    data = json.loads(store.read_text(name, RECORD_FILE))
    return RunRecord(name, store, data["metrics"], data["epochs"], data["wall_time_s"],
                     reused=True)


def write_record(store: str | Path | Storage, name: str, metrics: dict, epochs: int,
                 wall: float, history: list) -> None:
    payload = {"metrics": metrics, "epochs": epochs, "wall_time_s": wall, "history": history}
    Storage.open(store).write_text(json.dumps(payload, indent=1, default=float), name,
                                   RECORD_FILE)


def save_run(store: str | Path | Storage, name: str, strategy: Any, metrics: dict, epochs: int,
             wall: float, history: list) -> RunRecord:
    """Write a finished run: the weights first, the record last (what makes it finished)."""
    store = Storage.open(store)
    store.remove_stale_temps(name)  # left by a writer of this run that was killed mid-write
    store.write_bytes(checkpoint_bytes(strategy, run=name), name, MODEL_FILE)
    write_record(store, name, metrics, epochs, wall, history)
    return RunRecord(name, store, metrics, epochs, wall, reused=False)


def finished_runs(store: str | Path | Storage) -> Iterator[RunRecord]:
    """Every finished run in ``store``, in name order."""
    store = Storage.open(store)
    for info in store.list():
        if info.type.name == "Directory" and not info.base_name.startswith(("_", ".")):
            record = load_record(store, info.base_name)
            if record is not None:
                yield record


def train_or_reuse(data: DataBundle, cfg: TrainConfig, store: str | Path | Storage,
                   splits: tuple[str, ...] = ("val", "test")) -> RunRecord:
    """Reuse the finished run named for (data, cfg) under ``store``, or train and save it."""
    store = Storage.open(store)
    name = run_name(data.spec, cfg)
    found = load_record(store, name)
    if found is not None:
        return found
    t0 = time.perf_counter()
    with resolving(store):
        strategy, result = train(data, cfg)
    metrics = evaluate_splits(strategy, data, splits)
    wall = time.perf_counter() - t0
    return save_run(store, name, strategy, metrics, result.epochs_run, wall,
                    [r.flat() for r in result.history])

