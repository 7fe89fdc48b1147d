"""``mla``: Multimodal Learning with Alternating unimodal adaptation (Zhang, Latham and Zhang,
"Multimodal Representation Learning by Alternating Unimodal Adaptation", CVPR 2024; code
Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation, ``main.py`` and
``utils/utils.py`` ``GSPlugin``).

Training: one modality per step, in turn (step i of an epoch trains modality i mod M): its
encoder and ONE head shared by all modalities, with CE(head(z_m), y). The shared head's weight
gradient is projected (the paper's gradient modification, an orthogonal-weight-modification
projector P, embed_dim x embed_dim, identity at the start) so it does not undo what the head
learned for the modalities before: with r the batch mean of the current embeddings,
k = P r, P <- P - k k^T / (a + r.k), P <- P / ||P||_F, and grad(W) <- grad(W) P^T, where
a = 0.1 ** (1 + i / steps_per_epoch) (released code). P is kept across epochs (a buffer).

Inference: each modality's logits through the shared head, fused with weights from their
prediction entropies, w_m = exp(max_j H_j - H_m) / sum (a softmax of -H: lower entropy, more
weight), per sample as the paper describes (the released code computes one entropy per batch).

Defaults (source): no knob of its own beyond the projector schedule (released code); the
learning rate is the main setting, as for the other joint methods. The released code runs the
M unimodal steps on every batch; we give each batch to one modality, which keeps one optimiser
step per batch in the one loop (each modality sees every other batch of an epoch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DatasetSpec, MultimodalDataset
from trainers.strategies.base import Phase, Strategy, register_strategy
from trainers.strategies.shares import entropy


def project_update(proj: torch.Tensor, r: torch.Tensor, a: float) -> torch.Tensor:
    """One OWM step: P - (P r)(P r)^T / (a + r.P r), normalised to unit Frobenius norm."""
    k = proj @ r
    new = proj - torch.outer(k, k) / (a + r @ k)
    return new / new.norm()


def entropy_weights(logits: list[torch.Tensor]) -> torch.Tensor:
    """(M, N) fusion weights: softmax over modalities of minus each prediction's entropy."""
    return torch.stack([-entropy(lg) for lg in logits]).softmax(0)


@register_strategy("mla")
class MLA(Strategy):
    tasks = ("classification",)
    SEARCH_SPACE = {"lr": "loguniform:1e-4:1e-2"}

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        if cfg.head != "linear":
            raise ConfigError(f"mla projects the gradient of a shared linear head; head "
                              f"{cfg.head!r} is not supported: use head='linear'")
        self.encoders = nn.ModuleDict({m: self.make_encoder(m) for m in spec.modality_names})
        self.head = self.make_head(cfg.embed_dim)
        self.register_buffer("projector", torch.eye(cfg.embed_dim))
        self.step = 0
        self.steps_per_epoch = 1
        self.feature_mean: torch.Tensor | None = None

    def on_epoch_start(self, phase: Phase, epoch: int, train: MultimodalDataset) -> None:
        self.step = 0
        self.steps_per_epoch = max(1, math.ceil(len(train) / self.cfg.batch_size))

    def current_modality(self) -> str:
        names = self.spec.modality_names
        return names[self.step % len(names)]

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        m = self.current_modality()
        z = self.encoders[m](batch["x"][m])
        logits = self.head(z)[1]
        self.feature_mean = z.detach().mean(0)
        loss = F.cross_entropy(logits, batch["y"])
        return {"loss": loss, "logits": logits, f"ce_{m}": loss.detach()}

    def after_backward(self, phase: Phase) -> None:
        """Project the shared head's weight gradient, then move to the next modality."""
        if self.feature_mean is not None:
            a = 0.1 ** (1 + self.step / self.steps_per_epoch)
            self.projector.copy_(project_update(self.projector, self.feature_mean, a))
            weight = self.head.classifier.weight
            if weight.grad is not None:
                weight.grad = weight.grad @ self.projector.t()
        self.feature_mean = None
        self.step += 1

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        per = {m: self.head(enc(x[m]))[1] for m, enc in self.encoders.items()}
        w = entropy_weights(list(per.values()))
        fused = sum(wi[:, None] * lg for wi, lg in zip(w, per.values(), strict=True))
        return {"fused": fused, **per}

    def encoder(self, m: str) -> nn.Module:
        return self.encoders[self.check_modality(m)]
