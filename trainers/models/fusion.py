"""Late fusion: ``LateFusion(encoders, fusion, head)`` after TorchMultimodal.

A fusion turns the per-modality embeddings into one vector; the head maps it to logits.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class ConcatFusion(nn.Module):
    """Concatenate embeddings in modality order."""

    def __init__(self, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = list(modalities)

    def forward(self, z: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([z[m] for m in self.modalities], dim=1)


class AvgFusion(nn.Module):
    """Mean of the embeddings (all must have the same size)."""

    def __init__(self, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = list(modalities)

    def forward(self, z: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([z[m] for m in self.modalities]).mean(dim=0)


def create_head(kind: str, in_dim: int, num_classes: int, hidden_dim: int = 128) -> nn.Module:
    """``linear``, or ``mlp`` (one hidden layer: needed to learn cross-modal interactions)."""
    if kind == "linear":
        return nn.Linear(in_dim, num_classes)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                             nn.Linear(hidden_dim, num_classes))
    raise KeyError(f"unknown head {kind!r}; valid heads: linear, mlp")


class LateFusion(nn.Module):
    """Encoders per modality, a fusion, a head. Returns logits and the embeddings."""

    def __init__(self, encoders: nn.ModuleDict, fusion: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoders = encoders
        self.fusion = fusion
        self.head = head

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders.keys())

    def embed(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: enc(x[m]) for m, enc in self.encoders.items()}

    def forward(self, x: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        z = self.embed(x)
        return self.head(self.fusion(z)), z

    def modality_logits(self, z: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each modality's share: the fused head with the other embeddings set to zero."""
        out = {}
        for m in z:
            masked = {k: v if k == m else torch.zeros_like(v) for k, v in z.items()}
            out[m] = self.head(self.fusion(masked))
        return out
