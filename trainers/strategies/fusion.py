"""``fusion_concat`` / ``fusion_avg``: all encoders trained jointly with ONE loss on the fused
embedding (concatenation or mean) through one head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainers.config import TrainConfig
from trainers.data.contract import DatasetSpec
from trainers.models.fusion import AvgFusion, LateFusion, create_head
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
        logits, z = self.model(batch["x"])
        ce = self.criterion(logits, batch["y"])
        return {"loss": ce, "ce": ce.detach(), "logits": logits, "embeddings": z}

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, z = self.model(x)
        return {"fused": logits, **self.model.modality_logits(z)}

    def encoder(self, m: str) -> nn.Module:
        return self.model.encoders[self.check_modality(m)]


@register_strategy("fusion_avg")
class FusionAvg(FusionConcat):
    """Joint training on mean(z_1..z_M); all embeddings share ``embed_dim``."""

    def build_model(self) -> LateFusion:
        names = list(self.spec.modality_names)
        model = self.make_late_fusion(names)
        head = create_head(self.cfg.head, self.cfg.embed_dim, self.spec.num_classes,
                           self.cfg.hidden_dim)
        return LateFusion(model.encoders, AvgFusion(names), head)
