"""``gblending``: Gradient-Blending (Wang, Tran and Feiszli, "What Makes Training Multi-modal
Classification Networks Hard?", CVPR 2020), the online variant.

Heads: the fused head on concat(z_1..z_M) and one linear head per modality on its own
embedding. Loss = sum_k w_k CE_k over the K = M + 1 heads. A part of the **train** split is held
out (never val or test; ``holdout`` of it, drawn with the run's seed) and the loop trains on the
rest. Every ``period`` epochs the weights are re-estimated from how each head's losses moved
since the previous estimate:

  G_k = L_hold_k(before) - L_hold_k(now)            (generalisation gain)
  O_k = L_hold_k - L_train_k,  dO_k = O_k(now) - O_k(before)   (overfitting change)
  w_k proportional to |G_k| / dO_k^2, normalised to sum to 1

(uniform weights until the first estimate, and whenever every G_k is 0). Train losses are measured
on the part trained on, in eval mode, like the held-out ones.

Defaults: period = 2 epochs (the paper re-estimates every "super-epoch"; its length is not a
fixed number there; 2 fits our 10-epoch budget), holdout = 0.1 of train (our choice; the paper
holds out a part of train of unstated size).
Prediction: the fused head; each modality's own head gives its per-modality prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import (
    DatasetSpec,
    FileDataset,
    MultimodalDataset,
    TensorDataset,
    iterate_batches,
)
from trainers.strategies import checks
from trainers.strategies.base import Phase, Strategy, register_strategy


@dataclass(frozen=True)
class GBlendingParams:
    period: int = 2
    holdout: float = 0.1

    def __post_init__(self) -> None:
        checks.integer("gblending", "period", self.period, 1)
        checks.number("gblending", "holdout", self.holdout, 0.0, 1.0, high_open=True,
                      fix="the fraction of train held out to estimate the weights, e.g. 0.1")
        if self.holdout == 0:
            raise ConfigError("gblending holdout must be positive but got 0; G-Blending needs a "
                              "held-out part of train, e.g. holdout=0.1")


def blend_weights(g: torch.Tensor, d_o: torch.Tensor) -> torch.Tensor:
    """w_k = |G_k| / dO_k^2, normalised (uniform when every G_k is 0)."""
    raw = g.abs() / (d_o * d_o).clamp_min(1e-12)
    total = raw.sum()
    uniform = torch.full_like(raw, 1.0 / len(raw))
    return torch.where(total > 0, raw / total.clamp_min(1e-30), uniform)


def subset(ds: MultimodalDataset, idx: torch.Tensor) -> MultimodalDataset:
    """The samples ``idx`` of ``ds`` as a split of their own."""
    ids = {"camids": ds.camids[idx], "sceneids": ds.sceneids[idx]}
    if isinstance(ds, TensorDataset):
        return TensorDataset(ds.spec, ds.split, {m: t[idx] for m, t in ds.tensors.items()},
                             ds.labels[idx], **ids)
    rows = idx.tolist()
    return FileDataset(ds.spec, ds.split, lambda i: ds[rows[i]]["x"], ds.labels[idx],
                       validate="first", **ids)


@register_strategy("gblending")
class GBlending(Strategy):
    Params = GBlendingParams
    tasks = ("classification",)
    SEARCH_SPACE = {"period": "int:1:5", "holdout": "uniform:0.05:0.3"}

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        self.model = self.make_late_fusion(spec.modality_names)
        self.heads = nn.ModuleDict({m: self.make_head(cfg.embed_dim)
                                    for m in spec.modality_names})
        k = len(spec.modality_names) + 1
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("last_losses", torch.zeros(2, k))  # (train, holdout) at last estimate
        self.holdout: MultimodalDataset | None = None

    def fit_split(self, train: MultimodalDataset) -> MultimodalDataset:
        n = len(train)
        n_hold = int(self.p.holdout * n)
        if n_hold < self.spec.num_classes or n_hold >= n:
            raise ConfigError(
                f"gblending: train split of {self.spec.name!r} has {n} samples; holdout="
                f"{self.p.holdout} holds out {n_hold}, fewer than the {self.spec.num_classes} "
                "classes (or all of it) to estimate the blend weights on; raise holdout or use "
                "a larger train split")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed))
        self.holdout = subset(train, order[:n_hold])
        return subset(train, order[n_hold:])

    def head_logits(self, x: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Logits of the fused head, then of each modality's head."""
        out = self.model(x)
        return [out["logits"], *(self.heads[m](out["embeddings"][m])[1]
                                 for m in self.spec.modality_names)]

    @torch.no_grad()
    def head_losses(self, ds: MultimodalDataset) -> torch.Tensor:
        """Mean CE of every head over ``ds`` (eval mode)."""
        self.eval()
        dev = self.weights.device
        total = torch.zeros_like(self.weights)
        for batch in iterate_batches(ds, self.cfg.batch_size):
            y = batch["y"].to(dev)
            x = {m: v.to(dev) for m, v in batch["x"].items()}
            total += torch.stack([F.cross_entropy(lg, y, reduction="sum")
                                  for lg in self.head_logits(x)])
        return total / len(ds)

    def on_epoch_start(self, phase: Phase, epoch: int, train: MultimodalDataset) -> None:
        if epoch % self.p.period or self.holdout is None:
            return
        now = torch.stack([self.head_losses(train), self.head_losses(self.holdout)])
        if epoch > 0:
            gain = self.last_losses[1] - now[1]
            d_over = (now[1] - now[0]) - (self.last_losses[1] - self.last_losses[0])
            self.weights.copy_(blend_weights(gain, d_over))
        self.last_losses.copy_(now)

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        logits = self.head_logits(batch["x"])
        ces = torch.stack([F.cross_entropy(lg, batch["y"]) for lg in logits])
        keys = ["fused", *self.spec.modality_names]
        return {"loss": (self.weights * ces).sum(), "logits": logits[0], "ce": ces[0].detach(),
                **{f"w_{k}": w for k, w in zip(keys, self.weights, strict=True)}}

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.head_logits(x)
        return {"fused": logits[0], **dict(zip(self.spec.modality_names, logits[1:],
                                               strict=True))}

    def encoder(self, m: str) -> nn.Module:
        return self.model.encoders[self.check_modality(m)]
