"""``ogm_ge``: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng et al.,
"Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022).

A fusion_concat model and its CE loss; after ``backward()`` each encoder's gradient is modulated
before the optimiser step, during the epochs ``[start, end]``:

- score s_m = sum over the batch of softmax(share_m)[y], share_m being modality m's share of the
  fused linear classifier (W_m z_m + b / M, see :mod:`trainers.strategies.shares`);
- ratio rho_m = s_m / min_j s_j; a modality with rho_m > 1 (the dominant one) gets
  k_m = 1 - tanh(alpha * rho_m), the others k_m = 1 (for two modalities exactly the released
  code's rule; with M > 2 every modality is compared with the weakest);
- GE: g <- k_m * g + N(0, std(g)^2), the noise having the gradient's own std, on the encoders'
  weight tensors (released code: on the 4-D convolution weights; here every parameter with two or
  more dimensions, so MLP encoders get it too). ``ge=False`` is plain OGM.

Defaults (source): alpha = 0.8 (the paper's and released code's CREMA-D setting), window
start = 0, end = 50 (released code: ``--modulation_starts 0 --modulation_ends 50``), GE on.
Epochs are counted from 0 within the training phase. The noise uses torch's global generator,
seeded by ``trainers.api.build``: a run is deterministic from its start; a run resumed from a
checkpoint draws different noise than an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DatasetSpec, MultimodalDataset
from trainers.strategies import checks
from trainers.strategies.base import Phase, register_strategy
from trainers.strategies.fusion import FusionConcat
from trainers.strategies.shares import modality_shares, true_class_score


@dataclass(frozen=True)
class OGMGEParams:
    alpha: float = 0.8
    start: int = 0
    end: int = 50
    ge: bool = True

    def __post_init__(self) -> None:
        checks.number("ogm_ge", "alpha", self.alpha, fix="use alpha >= 0 (0 turns OGM off)")
        checks.window("ogm_ge", self.start, self.end)
        if not isinstance(self.ge, bool):
            raise ConfigError(f"ogm_ge ge must be true or false but got {self.ge!r}")


def modulation(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """k_m = 1 - tanh(alpha * rho_m) where rho_m = s_m / min_j s_j > 1, else 1."""
    rho = scores / scores.min().clamp_min(1e-12)
    return torch.where(rho > 1, 1 - torch.tanh(alpha * rho), torch.ones_like(rho))


def modulate_(params: list[torch.nn.Parameter], k: torch.Tensor, ge: bool) -> None:
    """g <- k * g (+ Gaussian noise with g's own std on tensors of 2+ dimensions)."""
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        new = g * k
        if ge and g.dim() > 1:
            new = new + torch.randn_like(g) * (g.std() + 1e-8)
        p.grad = new


@register_strategy("ogm_ge")
class OGMGE(FusionConcat):
    Params = OGMGEParams
    tasks = ("classification",)
    SEARCH_SPACE = {"alpha": "uniform:0:1", "end": "int:5:50"}

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        self.epoch = 0
        self.coeff: torch.Tensor | None = None

    def on_epoch_start(self, phase: Phase, epoch: int, train: MultimodalDataset) -> None:
        self.epoch = epoch

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        out = super().forward_loss(batch, phase)
        shares = modality_shares(self.model, out["embeddings"])
        scores = torch.stack([true_class_score(shares[m], batch["y"])
                              for m in self.spec.modality_names])
        self.coeff = modulation(scores, self.p.alpha)
        return {**out, **{f"k_{m}": k for m, k in zip(self.spec.modality_names, self.coeff,
                                                      strict=True)}}

    def after_backward(self, phase: Phase) -> None:
        if self.coeff is None or not self.p.start <= self.epoch <= self.p.end:
            return
        for m, k in zip(self.spec.modality_names, self.coeff, strict=True):
            modulate_(list(self.model.encoders[m].parameters()), k, self.p.ge)
