"""The library's front door: build a strategy, train it, evaluate it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trainers.config import TrainConfig
from trainers.data.contract import DataBundle, DatasetSpec
from trainers.loop import Callback, FitResult, Metrics, evaluate_split, fit
from trainers.seed import seed_everything
from trainers.strategies import create_strategy
from trainers.strategies.base import Strategy


def build(spec: DatasetSpec, cfg: TrainConfig) -> Strategy:
    """Seed, then build: the same (config, seed) always gives the same initial weights."""
    seed_everything(cfg.seed)
    return create_strategy(spec, cfg)


def train(data: DataBundle, cfg: TrainConfig, callbacks: Sequence[Callback] = (),
          resume: Mapping[str, Any] | None = None) -> tuple[Strategy, FitResult]:
    """Build ``cfg.strategy`` for ``data`` and train it; returns the best-on-val model."""
    strategy = build(data.spec, cfg)
    return strategy, fit(strategy, data, callbacks, resume)


def evaluate_splits(strategy: Strategy, data: DataBundle,
                    splits: Sequence[str] = ("val", "test")) -> dict[str, Metrics]:
    """Metrics per split; call once per final model on ``test`` (docs/protocol.md)."""
    return {s: evaluate_split(strategy, data, s, strategy.cfg.batch_size) for s in splits}
