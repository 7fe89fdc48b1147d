"""``mmpareto``: MMPareto (Wei and Hu, "MMPareto: Boosting Multimodal Learning with Innocent
Unimodal Assistance", ICML 2024; code GeWu-Lab/MMPareto_ICML2024, ``MMPareto.py``).

Losses: multimodal CE on the fused head (concat) + one unimodal CE per modality (a linear head
each on that modality's embedding). The heads get the plain gradient of the summed loss. For
each modality's encoder, with g_mm the gradient of the multimodal loss and g_u that of the
modality's own loss (over all its parameters):

- cos(g_mm, g_u) > 0 (no conflict): weights (0.5, 0.5);
- otherwise the min-norm (MGDA) weights of the two, w_mm = clip((g_u - g_mm).g_u /
  ||g_mm - g_u||^2, 0, 1), w_u = 1 - w_mm;
- combined per parameter tensor: g = 2 (w_mm g_mm + w_u g_u); if the plain summed gradient
  g_mm + g_u has the larger norm, g is rescaled to that norm; then g <- gamma * g
  (the paper's magnitude rescaling, as the released code does it: per tensor, gamma = 1.5).

Defaults (source): gamma = 1.5 (released code; the paper's rescaling is "to the magnitude of
the uniform combination", which the code applies per tensor with this extra factor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import TrainConfig
from trainers.data.contract import DatasetSpec
from trainers.strategies import checks
from trainers.strategies.base import Phase, Strategy, register_strategy

Grads = Sequence[torch.Tensor]


@dataclass(frozen=True)
class MMParetoParams:
    gamma: float = 1.5

    def __post_init__(self) -> None:
        checks.positive("mmpareto", "gamma", self.gamma, fix="the released code uses 1.5")


def _dot(a: Grads, b: Grads) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def pareto_weight(g_mm: Grads, g_u: Grads) -> torch.Tensor:
    """Weight of the multimodal gradient: 0.5 without conflict, the MGDA weight otherwise."""
    mm, uu, mu = _dot(g_mm, g_mm), _dot(g_u, g_u), _dot(g_mm, g_u)
    cos = mu / (mm.sqrt() * uu.sqrt()).clamp_min(1e-20)
    mgda = ((uu - mu) / (mm + uu - 2 * mu).clamp_min(1e-20)).clamp(0, 1)
    return torch.where(cos > 0, torch.full_like(cos, 0.5), mgda)


def pareto_combine(g_mm: Grads, g_u: Grads, gamma: float) -> list[torch.Tensor]:
    """The combined, rescaled gradient of one encoder (one tensor per parameter)."""
    w = pareto_weight(g_mm, g_u)
    out = []
    for a, b in zip(g_mm, g_u, strict=True):
        new = 2 * (w * a + (1 - w) * b)
        ratio = (a + b).norm() / new.norm().clamp_min(1e-20)
        out.append(new * torch.where(ratio > 1, ratio, torch.ones_like(ratio)) * gamma)
    return out


@register_strategy("mmpareto")
class MMPareto(Strategy):
    Params = MMParetoParams
    tasks = ("classification",)
    SEARCH_SPACE = {"gamma": "uniform:1:2", "lr": "loguniform:1e-4:1e-2"}

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        self.model = self.make_late_fusion(spec.modality_names)
        self.heads = nn.ModuleDict({m: self.make_head(cfg.embed_dim)
                                    for m in spec.modality_names})
        self.unimodal_grads: dict[str, list[torch.Tensor]] = {}

    def encoder_params(self, m: str) -> list[nn.Parameter]:
        return [p for p in self.model.encoders[m].parameters() if p.requires_grad]

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        out = self.model(batch["x"])
        y = batch["y"]
        mm = F.cross_entropy(out["logits"], y)
        uni = {m: F.cross_entropy(self.heads[m](out["embeddings"][m])[1], y)
               for m in self.spec.modality_names}
        self.unimodal_grads = {}
        if torch.is_grad_enabled():
            for m, loss_m in uni.items():
                params = self.encoder_params(m)
                grads = torch.autograd.grad(loss_m, params, retain_graph=True, allow_unused=True)
                self.unimodal_grads[m] = [torch.zeros_like(p) if g is None else g
                                          for p, g in zip(params, grads, strict=True)]
        loss = mm + sum(uni.values())
        return {"loss": loss, "logits": out["logits"], "mm": mm.detach(),
                **{f"ce_{m}": v.detach() for m, v in uni.items()}}

    def after_backward(self, phase: Phase) -> None:
        """Replace each encoder's summed gradient g_mm + g_u by the Pareto combination."""
        for m, g_u in self.unimodal_grads.items():
            params = self.encoder_params(m)
            total = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
            g_mm = [t - u for t, u in zip(total, g_u, strict=True)]
            for p, g in zip(params, pareto_combine(g_mm, g_u, self.p.gamma), strict=True):
                if p.grad is not None:  # a parameter no loss reached stays without gradient
                    p.grad = g
        self.unimodal_grads = {}

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(x)
        return {"fused": out["logits"],
                **{m: self.heads[m](out["embeddings"][m])[1] for m in self.spec.modality_names}}

    def encoder(self, m: str) -> nn.Module:
        return self.model.encoders[self.check_modality(m)]
