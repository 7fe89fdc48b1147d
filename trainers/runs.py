"""Deterministic run names and a local store of finished runs.

A run is named from (dataset, dataset version, strategy, modality, backbone, hyper-parameters,
seed): no timestamps, so a rerun finds the finished run and reuses it instead of training again.
The orchestrator names its Ray jobs with the same function, so local and cluster runs line up.
Layout: ``<store>/<run_name>/model.pt`` (weights) and ``result.json`` (metrics, history).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainers.api import evaluate_splits, train
from trainers.checkpoint import save_checkpoint
from trainers.config import TrainConfig
from trainers.data.contract import DataBundle, DatasetSpec

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
    path: Path  # the run's folder
    metrics: dict[str, Any]  # split -> key -> metric -> value
    epochs: int
    wall_time_s: float
    reused: bool

    @property
    def checkpoint(self) -> Path:
        return self.path / "model.pt"


def load_record(folder: Path) -> RunRecord | None:
    """The finished run in ``folder``, or None when there is none (or it is incomplete)."""
    result, model = folder / "result.json", folder / "model.pt"
    if not (result.is_file() and model.is_file()):
        return None
    data = json.loads(result.read_text())
    return RunRecord(folder.name, folder, data["metrics"], data["epochs"], data["wall_time_s"],
                     reused=True)


def write_record(folder: Path, metrics: dict, epochs: int, wall: float, history: list) -> None:
    payload = {"metrics": metrics, "epochs": epochs, "wall_time_s": wall, "history": history}
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.replace(folder / "result.json")


def train_or_reuse(data: DataBundle, cfg: TrainConfig, store: str | Path,
                   splits: tuple[str, ...] = ("val", "test")) -> RunRecord:
    """Reuse the finished run named for (data, cfg) under ``store``, or train and save it."""
    folder = Path(store) / run_name(data.spec, cfg)
    found = load_record(folder)
    if found is not None:
        return found
    t0 = time.perf_counter()
    strategy, result = train(data, cfg)
    metrics = evaluate_splits(strategy, data, splits)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(strategy, folder / "model.pt", run=folder.name)
    wall = time.perf_counter() - t0
    write_record(folder, metrics, result.epochs_run, wall, [r.flat() for r in result.history])
    return RunRecord(folder.name, folder, metrics, result.epochs_run, wall, reused=False)


def record_dict(rec: RunRecord) -> dict[str, Any]:
    out = asdict(rec)
    out["path"] = str(rec.path)
    return out
