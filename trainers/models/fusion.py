"""Late fusion: ``LateFusion(encoders, fusion, head)`` after TorchMultimodal.

A fusion turns the per-modality embeddings into one vector; the head maps it to
``(features, logits)``: the features are what retrieval uses (the fused embedding itself for
classification heads, the BatchNorm-ed embedding for the reid BNNeck), the logits what the
classification or identity loss uses.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from trainers.reid.losses import BNNeck


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


class ClassifierHead(nn.Module):
    """Wraps a classifier so it returns ``(features, logits)`` like the BNNeck."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return f, self.classifier(f)


def create_head(kind: str, in_dim: int, num_classes: int, hidden_dim: int = 128,
                task: str = "classification") -> nn.Module:
    """``linear``, or ``mlp`` (one hidden layer: needed to learn cross-modal interactions);
    for reid, ``linear`` is the BNNeck (BatchNorm with frozen bias + bias-free classifier)."""
    if task == "reid":
        if kind != "linear":
            raise ValueError(f"head {kind!r} is not available for reid; reid uses the BNNeck "
                             "(head='linear')")
        return BNNeck(in_dim, num_classes)
    if kind == "linear":
        return ClassifierHead(nn.Linear(in_dim, num_classes))
    if kind == "mlp":
        return ClassifierHead(nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                                            nn.Linear(hidden_dim, num_classes)))
    raise KeyError(f"unknown head {kind!r}; valid heads: linear, mlp")


class LateFusion(nn.Module):
    """Encoders per modality, a fusion, a head."""

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

    def forward(self, x: Mapping[str, torch.Tensor]) -> dict:
        """``logits``, ``features`` (head features), ``fused`` (pre-head), ``embeddings``."""
        z = self.embed(x)
        fused = self.fusion(z)
        features, logits = self.head(fused)
        return {"logits": logits, "features": features, "fused": fused, "embeddings": z}

    def modality_outputs(self, z: Mapping[str, torch.Tensor]) -> dict[str, tuple]:
        """Each modality's share: the fused head with the other embeddings set to zero."""
        out = {}
        for m in z:
            masked = {k: v if k == m else torch.zeros_like(v) for k, v in z.items()}
            out[m] = self.head(self.fusion(masked))
        return out
