"""``modality_dropout``: fusion_concat trained with whole modalities dropped at random.

During training each sample's embedding z_m of each modality is replaced by zeros with
probability ``p``, independently per (sample, modality); a sample that would lose every modality
keeps one, drawn uniformly (never all of them). There is no rescaling of the kept embeddings:
zeros are what a missing modality looks like at test time (``trainers.diagnostics.robustness``).
Evaluation uses every modality. The idea is ModDrop (Neverova et al., TPAMI 2016) at the
embedding level, as modality-dropout baselines in the modality-imbalance literature apply it.

Defaults: p = 0.3 (our choice: no paper fixes one for this baseline; the search space covers
[0, 0.9]). The masks use torch's global generator, seeded by ``trainers.api.build`` (a resumed
run draws different masks than an uninterrupted one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trainers.strategies import checks
from trainers.strategies.base import Phase, register_strategy
from trainers.strategies.fusion import FusionConcat


@dataclass(frozen=True)
class ModalityDropoutParams:
    p: float = 0.3

    def __post_init__(self) -> None:
        checks.number("modality_dropout", "p", self.p, 0.0, 1.0, high_open=True,
                      fix="p is a per-sample drop probability, 0 <= p < 1")


def keep_mask(n: int, m: int, p: float, device: torch.device) -> torch.Tensor:
    """(n, m) booleans: True = keep. Each entry is dropped with probability p; a row with no
    True left gets one back at a uniformly drawn position."""
    keep = torch.rand(n, m, device=device) >= p
    rescue = F.one_hot(torch.randint(0, m, (n,), device=device), m).bool()
    return keep | (rescue & ~keep.any(1, keepdim=True))


@register_strategy("modality_dropout")
class ModalityDropout(FusionConcat):
    Params = ModalityDropoutParams
    SEARCH_SPACE = {"p": "uniform:0:0.9"}

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        z = self.model.embed(batch["x"])
        names = self.spec.modality_names
        first = z[names[0]]
        keep = keep_mask(len(first), len(names), self.p.p, first.device)
        dropped = {m: z[m] * keep[:, i:i + 1].to(z[m].dtype) for i, m in enumerate(names)}
        fused = self.model.fusion(dropped)
        features, logits = self.model.head(fused)
        return {**self.task_loss(fused, logits, batch["y"]), "logits": logits, "embeddings": z,
                "kept": keep.float().mean()}
