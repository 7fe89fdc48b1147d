"""Checkpoints: a strategy's state dict plus plain metadata, loaded with ``weights_only=True``.

Only tensors, numbers, strings, lists and dicts are stored, so loading never unpickles code.
Checkpoints of runs that another run depends on (UME/UniCat members, UMT teachers, ReconBoost
warm starts) are named by run name and looked up in the run store made active by
:func:`resolving` (a local copy is fetched once per node from a remote store).
"""

from __future__ import annotations

import contextvars
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainers.config import ConfigError, TrainConfig
from trainers.storage import Storage

if TYPE_CHECKING:
    from trainers.data.contract import DatasetSpec
    from trainers.strategies.base import Strategy

FORMAT = 1
MODEL_FILE = "model.pt"  # a finished run's weights, in its folder of the run store
RECORD_FILE = "result.json"  # its record, written last: the run is finished once it exists
_STORE: contextvars.ContextVar[Storage | None] = contextvars.ContextVar("run_store", default=None)


def checkpoint_bytes(strategy: Strategy, **meta: Any) -> bytes:
    """``strategy``'s weights and config, serialised."""
    payload = {"format": FORMAT, "strategy": strategy.name, "dataset": strategy.spec.name,
               "data_identity": strategy.spec.identity,
               "config": strategy.cfg.to_json(), "meta": json.dumps(meta, default=str),
               "state": {k: v.detach().cpu() for k, v in strategy.state_dict().items()}}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(strategy: Strategy, path: str | Path, **meta: Any) -> Path:
    """Write ``strategy``'s weights and config to a file (all-or-nothing); returns the path."""
    path = Path(path).absolute()
    Storage.open(path.parent).write_bytes(checkpoint_bytes(strategy, **meta), path.name)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a fusion-orchestrator checkpoint (format {FORMAT})")
    return payload


def load_checkpoint(path: str | Path, spec: DatasetSpec,
                    store: str | Path | Storage | None = None) -> Strategy:
    """Rebuild the strategy saved at ``path`` for dataset ``spec`` and load its weights; the
    runs it depends on are looked up in ``store`` (or the store already active)."""
    from trainers.strategies import create_strategy

    payload = read_checkpoint(path)
    if payload["dataset"] != spec.name:
        raise ConfigError(f"checkpoint {str(path)!r} was trained on {payload['dataset']!r}, "
                          f"not {spec.name!r}")
    cfg = TrainConfig.from_dict(json.loads(payload["config"]))
    with resolving(store if store is not None else _STORE.get()):
        strategy = create_strategy(spec, cfg)
    strategy.load_state_dict(payload["state"])
    return strategy.eval()


@contextmanager
def resolving(store: str | Path | Storage | None) -> Iterator[None]:
    """Within this block, run names in strategy params are looked up in ``store``."""
    token = _STORE.set(None if store is None else Storage.open(store))
    try:
        yield
    finally:
        _STORE.reset(token)


def resolve_dependency(ref: str) -> Path:
    """The local checkpoint of the finished run named ``ref`` in the active store (see
    :func:`resolving`); the path of an existing checkpoint file is accepted as is."""
    store = _STORE.get()
    if store is not None and store.is_file(ref, RECORD_FILE):
        return store.local_copy(ref, MODEL_FILE)
    if (os.sep in ref or ref.endswith(".pt")) and Path(ref).is_file():
        return Path(ref)
    where = f"run store {store.location!r}" if store is not None else "no run store (none given)"
    raise ConfigError(f"depends on run {ref!r}, which is not finished in {where}; train it "
                      "first or pass the store that holds it")


def load_member(ref: str, spec: DatasetSpec, strategy: str, modality: str) -> Strategy:
    """Load a finished run that must be ``strategy`` on ``modality`` (teachers, UME members);
    ``ref`` is its run name (or a checkpoint file)."""
    path = resolve_dependency(ref)
    payload = read_checkpoint(path)
    cfg = json.loads(payload["config"])
    if payload["strategy"] != strategy or cfg["params"].get("modality") != modality:
        raise ConfigError(f"run {ref!r} is a {payload['strategy']} run on "
                          f"{cfg['params'].get('modality')!r}; expected {strategy} on "
                          f"{modality!r}")
    return load_checkpoint(path, spec)
