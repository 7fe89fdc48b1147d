"""``fusion_concat`` / ``fusion_avg``: all encoders trained jointly with ONE loss on the fused
embedding (concatenation or mean) through one head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainers.config import TrainConfig
from trainers.data.contract import DatasetSpec
from trainers.models.fusion import AvgFusion, LateFusion
from trainers.strategies.base import Phase, Strategy, register_strategy


@register_strategy("fusion_concat")
class FusionConcat(Strategy):
    """Naive joint training on concat(z_1..z_M) (the papers' baseline)."""

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        self.model = self.build_model()

    def build_model(self) -> LateFusion:
        return self.make_late_fusion(self.spec.modality_names)

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        out = self.model(batch["x"])
        return {**self.task_loss(out["fused"], out["logits"], batch["y"]),
                "logits": out["logits"], "embeddings": out["embeddings"]}

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(x)
        per = self.model.modality_outputs(out["embeddings"])
        return {"fused": self.task_output(out["features"], out["logits"]),
                **{m: self.task_output(*fl) for m, fl in per.items()}}

    def encoder(self, m: str) -> nn.Module:
        return self.model.encoders[self.check_modality(m)]


@register_strategy("fusion_avg")
class FusionAvg(FusionConcat):
    """Joint training on mean(z_1..z_M); all embeddings share ``embed_dim``."""

    def build_model(self) -> LateFusion:
        names = list(self.spec.modality_names)
        model = self.make_late_fusion(names)
        return LateFusion(model.encoders, AvgFusion(names), self.make_head(self.cfg.embed_dim))
