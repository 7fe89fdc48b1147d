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
        logits, z = self.model(batch["x"])
        return {"loss": self.criterion(logits, batch["y"]), "logits": logits,
                "embedding": z[self.modality]}

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, _ = self.model(x)
        return {"fused": logits, self.modality: logits}

    def encoder(self, m: str) -> nn.Module:
        if m != self.modality:
            raise ConfigError(f"this unimodal model is for {self.modality!r}, not {m!r}")
        return self.model.encoders[m]
