"""``unimodal``: one modality, its own encoder and head, its own loss."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DatasetSpec
from trainers.strategies.base import Phase, Strategy, register_strategy


@dataclass(frozen=True)
class UnimodalParams:
    modality: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.modality, str) or not self.modality:
            raise ConfigError("unimodal param modality is required: set params={'modality': "
                              f"<one of the dataset's modalities>}} (got {self.modality!r})")


@register_strategy("unimodal")
class Unimodal(Strategy):
    Params = UnimodalParams

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        self.modality = self.check_modality(self.p.modality)
        self.model = self.make_late_fusion([self.modality])

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        out = self.model(batch["x"])
        return {**self.task_loss(out["fused"], out["logits"], batch["y"]),
                "logits": out["logits"], "embedding": out["fused"]}

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(x)
        pred = self.task_output(out["features"], out["logits"])
        return {"fused": pred, self.modality: pred}

    def input_modalities(self) -> tuple[str, ...]:
        return (self.modality,)

    def encoder(self, m: str) -> nn.Module:
        if m != self.modality:
            raise ConfigError(f"this unimodal model is for {self.modality!r}, not {m!r}")
        return self.model.encoders[m]
