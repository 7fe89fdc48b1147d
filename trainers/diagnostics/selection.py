"""The UME/UMT paper's selection trick (section 3.3): do cross-modal interactions help here?

On the frozen encoders of finished ``unimodal`` runs, fit ONE linear classifier on the
concatenated embeddings (modalities can interact through the shared linear layer) and compare
its validation accuracy with UME's (the mean of the unimodal probabilities: next to no
interaction). Classifier better => interactions help => train UMT; otherwise UME is enough.

The linear classifier is the probe head of :mod:`trainers.diagnostics.probes` (standardised
features, full-batch L-BFGS, L2; deterministic). UME is the real ``ume`` strategy built from the
same checkpoints, so both numbers use exactly the same encoders. Only train (to fit) and val (to
compare) are touched; never test (docs/protocol.md).

A linear layer on concatenated embeddings is additive in the modalities, so it cannot express a
purely cross-modal rule (an XOR of the modalities, the ``synthetic_paired`` data) any more than
UME can; the trick tells apart "one modality should lean on the other" from "average them", not
whether a non-linear fusion would find pair-only features.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from trainers.api import build
from trainers.checkpoint import read_checkpoint
from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DataBundle
from trainers.diagnostics.probes import ProbeConfig, extract_features, fit_linear
from trainers.loop import evaluate
from trainers.metrics import accuracy
from trainers.strategies.base import Strategy


@dataclass(frozen=True)
class Selection:
    """Both validation accuracies and what they recommend."""

    linear_val_accuracy: float  # linear classifier on concatenated frozen unimodal embeddings
    ume_val_accuracy: float
    recommendation: Literal["umt", "ume"]

    def describe(self) -> str:
        why = ("the linear classifier is better: cross-modal interactions help"
               if self.recommendation == "umt" else
               "averaging the unimodal models is as good or better: interactions do not help")
        return (f"linear classifier on concatenated frozen unimodal embeddings: val accuracy "
                f"{100 * self.linear_val_accuracy:.2f}%\n"
                f"UME (mean of the unimodal probabilities):                  val accuracy "
                f"{100 * self.ume_val_accuracy:.2f}%\n"
                f"recommendation: {self.recommendation.upper()} ({why})")


def recommend(linear_val_accuracy: float, ume_val_accuracy: float) -> Literal["umt", "ume"]:
    """UMT only when the classifier is strictly better (a tie keeps the simpler UME)."""
    return "umt" if linear_val_accuracy > ume_val_accuracy else "ume"


def ume_from_checkpoints(data: DataBundle, checkpoints: Mapping[str, str | Path]) -> Strategy:
    """The ``ume`` strategy whose members are the finished unimodal runs ``checkpoints``."""
    missing = [m for m in data.spec.modality_names if m not in checkpoints]
    if missing:
        raise ConfigError(f"the selection trick needs a finished unimodal run of every modality; "
                          f"missing {missing[0]!r} (given {sorted(checkpoints)})")
    first = read_checkpoint(checkpoints[data.spec.modality_names[0]])
    base = TrainConfig.from_dict(json.loads(first["config"]))
    members = {m: str(p) for m, p in checkpoints.items()}
    return build(data.spec, base.replace(strategy="ume", params={"members": members})).eval()


def concat_features(ume: Strategy, data: DataBundle, split: str,
                    batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated member embeddings of ``split`` (modality order of the dataset) and labels."""
    parts = [extract_features(ume.encoder(m), data[split], m, batch_size)
             for m in data.spec.modality_names]
    return torch.cat([f for f, _ in parts], dim=1), parts[0][1]["y"]


def selection_trick(data: DataBundle, checkpoints: Mapping[str, str | Path],
                    cfg: ProbeConfig | None = None) -> Selection:
    """Fit the concatenated linear classifier, score it and UME on val, recommend."""
    cfg = cfg or ProbeConfig()
    if data.spec.task != "classification":
        raise ConfigError(f"the selection trick compares classifiers; dataset {data.spec.name!r} "
                          f"is a {data.spec.task} task")
    ume = ume_from_checkpoints(data, checkpoints)
    x, y = concat_features(ume, data, "train", cfg.batch_size)
    head = fit_linear(x, y, data.spec.num_classes, cfg)
    xv, yv = concat_features(ume, data, "val", cfg.batch_size)
    linear = accuracy(head(xv).argmax(-1), yv)
    ume_acc = evaluate(ume, data["val"], ume.cfg.batch_size)["fused"]["accuracy"]
    return Selection(linear, ume_acc, recommend(linear, ume_acc))
