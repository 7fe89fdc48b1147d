"""What the balancing methods (OGM-GE, PMR, MMPareto...) measure per modality.

A modality's *share* of a fused linear classifier on concat(z_1..z_M) is its block of the
weight matrix applied to its own embedding plus 1/M of the bias, as OGM-GE's released code
computes it (``W[:, block_m] z_m + b / M``); for other heads it is the head applied with the
other embeddings set to zero. Its *score* is sum over the batch of softmax(logits)[y], the
confidence in the true class (OGM-GE's s_m, PMR's prototype score).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from trainers.models.fusion import ClassifierHead, LateFusion


def modality_shares(model: LateFusion, z: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each modality's logits from its share of the fused head."""
    head = model.head
    if not (isinstance(head, ClassifierHead) and isinstance(head.classifier, nn.Linear)):
        return {m: logits for m, (_, logits) in model.modality_outputs(z).items()}
    lin, names = head.classifier, model.modalities
    out, start = {}, 0
    for m in names:
        width = z[m].shape[1]
        bias = lin.bias / len(names) if lin.bias is not None else 0
        out[m] = z[m] @ lin.weight[:, start:start + width].t() + bias
        start += width
    return out


def true_class_score(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sum_i softmax(logits_i)[y_i] (no gradient)."""
    return logits.detach().softmax(-1).gather(1, y[:, None]).sum()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy of softmax(logits) (natural log)."""
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)
