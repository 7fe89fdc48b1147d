"""``ume``: Uni-Modal Ensemble. M independent unimodal models; prediction = the (weighted) mean
of their softmax probabilities (returned as log-probabilities under ``fused``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from trainers.config import ConfigError, TrainConfig, non_negative
from trainers.data.contract import DatasetSpec
from trainers.strategies.base import register_strategy
from trainers.strategies.ensemble import MemberEnsemble


@dataclass(frozen=True)
class UMEParams:
    members: Mapping[str, str] = field(default_factory=dict)  # modality -> unimodal checkpoint
    weights: Mapping[str, float] = field(default_factory=dict)  # modality -> weight (default 1)

    def __post_init__(self) -> None:
        for m, w in dict(self.weights).items():
            non_negative(f"ume weight of {m!r}", w)
        if self.weights and sum(dict(self.weights).values()) <= 0:
            raise ConfigError("ume weights sum to 0; give at least one positive weight")


@register_strategy("ume")
class UME(MemberEnsemble):
    Params = UMEParams
    tasks = ("classification",)

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        for m in self.p.weights:
            self.check_modality(m)
        w = torch.tensor([float(self.p.weights.get(k, 1.0)) for k in self.keys])
        self.register_buffer("weights", w / w.sum())

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.member_outputs(x)
        probs = torch.stack([logits[k].softmax(-1) for k in self.keys])
        mean = (self.weights.view(-1, 1, 1) * probs).sum(0)
        return {"fused": mean.clamp_min(1e-12).log(), **logits}
