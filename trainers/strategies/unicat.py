"""``unicat``: UniCat (reid). Independent unimodal reid runs whose embeddings are concatenated
and L2-normalised as a whole at inference. ``modalities`` may repeat a modality, e.g.
``("rgb", "rgb")``: the single-modality ensemble of the UniCat paper's Table 4 (two backbones
trained independently on one modality, concatenated)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from trainers.strategies.base import register_strategy
from trainers.strategies.ensemble import MemberEnsemble


@dataclass(frozen=True)
class UniCatParams:
    members: Mapping[str, str] = field(default_factory=dict)  # member key -> unimodal ckpt
    modalities: tuple[str, ...] = ()  # default: each of the dataset's modalities once

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))


@register_strategy("unicat")
class UniCat(MemberEnsemble):
    Params = UniCatParams
    tasks = ("reid",)

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = self.member_outputs(x)
        fused = F.normalize(torch.cat([feats[k] for k in self.keys], dim=1), dim=1)
        return {"fused": fused, **feats}
