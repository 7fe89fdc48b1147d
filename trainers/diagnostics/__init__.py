"""Diagnostics of trained models (docs/diagnostics.md), plain PyTorch like the rest of trainers/.

- :mod:`~trainers.diagnostics.probes`: linear probes of each frozen encoder (modality
  laziness, train vs test), the laziness table;
- :mod:`~trainers.diagnostics.mir`: modality imbalance ratio and degree of modality competition;
- :mod:`~trainers.diagnostics.selection`: the UME/UMT selection trick;
- :mod:`~trainers.diagnostics.robustness`: test-time noise and missing modalities.

These functions return numbers; ``orchestrator.diagnostics_rows`` turns them into rows of the
Parquet results schema (the metric names are listed there) and ``python -m orchestrator
report`` shows them.
"""

from trainers.diagnostics.mir import Competition, imbalance_ratio, modality_competition
from trainers.diagnostics.probes import (
    LazinessRow,
    ProbeConfig,
    ProbeError,
    ProbeResult,
    extract_features,
    fit_linear,
    laziness_table,
    model_modalities,
    probe,
    probe_all,
)
from trainers.diagnostics.robustness import Condition, NoiseConfig, robustness
from trainers.diagnostics.selection import Selection, selection_trick

__all__ = [
    "Competition", "Condition", "LazinessRow", "NoiseConfig", "ProbeConfig", "ProbeError",
    "ProbeResult", "Selection", "extract_features", "fit_linear", "imbalance_ratio",
    "laziness_table", "modality_competition", "model_modalities", "probe", "probe_all",
    "robustness", "selection_trick",
]
