"""Checkpoints: a strategy's state dict plus plain metadata, loaded with ``weights_only=True``.

Only tensors, numbers, strings, lists and dicts are stored, so loading never unpickles code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainers.config import ConfigError, TrainConfig

if TYPE_CHECKING:
    from trainers.data.contract import DatasetSpec
    from trainers.strategies.base import Strategy

FORMAT = 1


def save_checkpoint(strategy: Strategy, path: str | Path, **meta: Any) -> Path:
    """Write ``strategy``'s weights and config; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "strategy": strategy.name, "dataset": strategy.spec.name,
               "data_identity": strategy.spec.identity,
               "config": strategy.cfg.to_json(), "meta": json.dumps(meta, default=str),
               "state": {k: v.detach().cpu() for k, v in strategy.state_dict().items()}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves half a checkpoint behind
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a fusion-orchestrator checkpoint (format {FORMAT})")
    return payload


def load_checkpoint(path: str | Path, spec: DatasetSpec) -> Strategy:
    """Rebuild the strategy saved at ``path`` for dataset ``spec`` and load its weights."""
    from trainers.strategies import create_strategy

    payload = read_checkpoint(path)
    if payload["dataset"] != spec.name:
        raise ConfigError(f"checkpoint {str(path)!r} was trained on {payload['dataset']!r}, "
                          f"not {spec.name!r}")
    cfg = TrainConfig.from_dict(json.loads(payload["config"]))
    strategy = create_strategy(spec, cfg)
    strategy.load_state_dict(payload["state"])
    return strategy.eval()


def load_member(path: str | Path, spec: DatasetSpec, strategy: str, modality: str) -> Strategy:
    """Load a finished run that must be ``strategy`` on ``modality`` (teachers, UME members)."""
    payload = read_checkpoint(path)
    cfg = json.loads(payload["config"])
    if payload["strategy"] != strategy or cfg["params"].get("modality") != modality:
        raise ConfigError(f"checkpoint {str(path)!r} is a {payload['strategy']} run on "
                          f"{cfg['params'].get('modality')!r}; expected {strategy} on "
                          f"{modality!r}")
    return load_checkpoint(path, spec)
