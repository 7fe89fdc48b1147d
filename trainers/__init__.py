"""fusion-orchestrator's training library: plain PyTorch, no Ray.

Strategies (``list_strategies()``) are built by name from a :class:`TrainConfig` and trained by
the one loop in :mod:`trainers.loop`; datasets come from :func:`create_dataset`.
"""

from trainers.api import build, evaluate_splits, train
from trainers.checkpoint import load_checkpoint, save_checkpoint
from trainers.config import ConfigError, TrainConfig
from trainers.data import DataError, create_dataset, list_datasets
from trainers.loop import EpochReport, FitResult, TrainingDiverged, evaluate, fit
from trainers.runs import RunRecord, run_name, train_or_reuse
from trainers.strategies import create_strategy, list_strategies

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataError", "EpochReport", "FitResult", "RunRecord", "TrainConfig",
    "TrainingDiverged", "build", "create_dataset", "create_strategy", "evaluate",
    "evaluate_splits", "fit", "list_datasets", "list_strategies", "load_checkpoint", "run_name",
    "save_checkpoint", "train", "train_or_reuse",
]
