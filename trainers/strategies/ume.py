"""``ume``: Uni-Modal Ensemble. M independent unimodal models; prediction = (weighted) mean of
their softmax probabilities. Members are either finished unimodal checkpoints (``members``) or
trained here one after the other, each in its own phase that touches only that member."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DatasetSpec
from trainers.strategies.base import OptimSpec, Phase, Strategy, register_strategy


@dataclass(frozen=True)
class UMEParams:
    members: Mapping[str, str] = field(default_factory=dict)  # modality -> unimodal checkpoint
    weights: Mapping[str, float] = field(default_factory=dict)  # modality -> weight (default 1)

    def __post_init__(self) -> None:
        for m, w in dict(self.weights).items():
            if not isinstance(w, int | float) or w < 0:
                raise ConfigError(f"ume weight of {m!r} cannot be negative but got {w!r}")
        if self.weights and sum(dict(self.weights).values()) <= 0:
            raise ConfigError("ume weights sum to 0; give at least one positive weight")


@register_strategy("ume")
class UME(Strategy):
    Params = UMEParams

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        from trainers.checkpoint import load_member

        for m in list(self.p.members) + list(self.p.weights):
            self.check_modality(m)
        self.members = nn.ModuleDict()
        for m in spec.modality_names:
            path = self.p.members.get(m)
            unimodal = cfg.replace(strategy="unimodal", params={"modality": m})
            self.members[m] = load_member(path, spec, "unimodal", m) if path else \
                _build_unimodal(spec, unimodal)
        w = torch.tensor([float(self.p.weights.get(m, 1.0)) for m in spec.modality_names])
        self.register_buffer("weights", w / w.sum())

    def phases(self) -> list[Phase]:
        optim = OptimSpec.from_config(self.cfg)
        return [Phase(f"unimodal:{m}", self.cfg.epochs, tuple(self.members[m].parameters()),
                      optim, modality=m, select_on=m, select_scope="phase")
                for m in self.spec.modality_names if m not in self.p.members]

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        return self.members[phase.modality].forward_loss(batch, phase)

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = {m: member.predict(x)["fused"] for m, member in self.members.items()}
        probs = torch.stack([logits[m].softmax(-1) for m in self.spec.modality_names])
        mean = (self.weights.view(-1, 1, 1) * probs).sum(0)
        return {"fused": mean.clamp_min(1e-12).log(), **logits}

    def encoder(self, m: str) -> nn.Module:
        return self.members[self.check_modality(m)].encoder(m)


def _build_unimodal(spec: DatasetSpec, cfg: TrainConfig) -> Strategy:
    from trainers.strategies.unimodal import Unimodal

    return Unimodal(spec, cfg)
