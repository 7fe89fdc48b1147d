"""``pmr``: Prototypical Modal Rebalance (Fan et al., "PMR: Prototypical Modal Rebalance for
Multimodal Learning", CVPR 2023).

A fusion_concat model trained with CE(fused) plus, per modality m, a prototype classifier:

- prototypes c_m[k] = mean embedding z_m of the train samples of class k, computed before every
  epoch (eval mode, no gradient) and blended with the previous ones:
  c <- (1 - momentum) * new + momentum * old (released code; the first epoch takes ``new``);
- prototype logits = -||z_m - c_m[k]||_2 (Euclidean), prototype score
  s_m = sum over the batch of softmax(prototype logits)[y];
- imbalance ratio rho_m = max_j s_j / s_m; a slower modality (rho_m > 1) gets
  alpha * rho_m * CE(prototype logits_m, y) (prototypical CE weighted by its imbalance ratio; the
  released code uses the constant alpha, which is the rho -> 1 limit), during epochs
  ``[start, end]``;
- the dominant modality (the highest score, when the scores differ) gets the prototypical entropy
  regulariser -mu * H(softmax(prototype logits)) during the first ``entropy_epochs`` epochs
  (the paper's "early training stage"; the released code has no such term, so its length and
  weight are our choice).

Defaults (source): alpha = 1.0, momentum = 0.2, window 0-100 (released code,
``main_Prototype_grad.py``: ``--alpha 1.0 --momentum_coef 0.2 --modulation_starts 0
--modulation_ends 100``); mu = 0.1 and
entropy_epochs = 5 are ours. The released code builds prototypes from the first tenth of the
train batches; we use the whole train split (it is small here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trainers.config import TrainConfig
from trainers.data.contract import DatasetSpec, MultimodalDataset, iterate_batches
from trainers.strategies import checks
from trainers.strategies.base import Phase, register_strategy
from trainers.strategies.fusion import FusionConcat
from trainers.strategies.shares import entropy, true_class_score


@dataclass(frozen=True)
class PMRParams:
    alpha: float = 1.0
    momentum: float = 0.2
    start: int = 0
    end: int = 100
    mu: float = 0.1
    entropy_epochs: int = 5

    def __post_init__(self) -> None:
        checks.number("pmr", "alpha", self.alpha, fix="use alpha >= 0 (0 turns PMR off)")
        checks.number("pmr", "momentum", self.momentum, 0.0, 1.0, high_open=True,
                      fix="the weight of the previous prototypes, 0 <= momentum < 1")
        checks.window("pmr", self.start, self.end)
        checks.number("pmr", "mu", self.mu, fix="use mu >= 0 (0 drops the entropy term)")
        checks.integer("pmr", "entropy_epochs", self.entropy_epochs)


def prototype_logits(z: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """-||z_i - c_k||_2 for every sample i and class k."""
    return -torch.cdist(z, protos)


def class_means(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """(sum of z per class, count per class) of one batch."""
    onehot = F.one_hot(y, num_classes).to(z.dtype)
    return onehot.t() @ z, onehot.sum(0)


def rebalance_weights(scores: torch.Tensor, alpha: float, mu: float,
                      entropy_on: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(prototypical-CE weight, entropy weight) per modality from the prototype scores."""
    rho = scores.max() / scores.clamp_min(1e-12)
    ce_w = torch.where(rho > 1, alpha * rho, torch.zeros_like(rho))
    dominant = (scores == scores.max()) & (scores.max() > scores.min())
    ent_w = dominant.to(scores.dtype) * (mu if entropy_on else 0.0)
    return ce_w, ent_w


@register_strategy("pmr")
class PMR(FusionConcat):
    Params = PMRParams
    tasks = ("classification",)
    SEARCH_SPACE = {"alpha": "uniform:0:2", "momentum": "uniform:0:0.9"}

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        m, c = len(spec.modality_names), spec.num_classes
        self.register_buffer("prototypes", torch.zeros(m, c, cfg.embed_dim))
        self.register_buffer("has_prototypes", torch.zeros(()))
        self.epoch = 0

    @torch.no_grad()
    def on_epoch_start(self, phase: Phase, epoch: int, train: MultimodalDataset) -> None:
        self.epoch = epoch
        self.eval()
        dev = self.prototypes.device
        sums = torch.zeros_like(self.prototypes)
        counts = torch.zeros(self.spec.num_classes, device=dev)
        for batch in iterate_batches(train, self.cfg.batch_size):
            y = batch["y"].to(dev)
            for i, m in enumerate(self.spec.modality_names):
                s, n = class_means(self.model.encoders[m](batch["x"][m].to(dev)), y,
                                   self.spec.num_classes)
                sums[i] += s
            counts += n  # the same for every modality: the batch's class counts
        new = sums / counts.clamp_min(1)[None, :, None]
        mom = self.p.momentum * self.has_prototypes
        self.prototypes.copy_((1 - mom) * new + mom * self.prototypes)
        self.has_prototypes.fill_(1.0)

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        out = super().forward_loss(batch, phase)
        y, names = batch["y"], self.spec.modality_names
        plogits = [prototype_logits(out["embeddings"][m], self.prototypes[i])
                   for i, m in enumerate(names)]
        scores = torch.stack([true_class_score(lg, y) for lg in plogits])
        active = self.p.start <= self.epoch <= self.p.end
        ce_w, ent_w = rebalance_weights(scores, self.p.alpha if active else 0.0, self.p.mu,
                                        self.epoch < self.p.entropy_epochs)
        pce = torch.stack([F.cross_entropy(lg, y) for lg in plogits])
        ent = torch.stack([entropy(lg).mean() for lg in plogits])
        loss = out["loss"] + (ce_w * pce).sum() - (ent_w * ent).sum()
        return {**out, "loss": loss, "proto_ce": pce.detach().mean(),
                **{f"proto_weight_{m}": w for m, w in zip(names, ce_w, strict=True)}}
