"""ReID training losses (SPEC section 3, UniCat eq. 1): soft-margin batch-hard triplet + BNNeck ID.

L = L_tri(z) + lambda_id * CE(classifier(BN(z)), y). The triplet term sees the pre-BN embedding
z, the identity term the BN-ed one (the BNNeck of Luo et al., "Bag of Tricks"), as in fast-reid:
the two losses want differently shaped spaces, and the BatchNorm decouples them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_euclidean(emb: torch.Tensor) -> torch.Tensor:
    """(N, N) Euclidean distances; the clamp keeps sqrt's gradient finite at zero distance.

    Same as fast-reid's ``euclidean_dist``: squared norms expanded, ``clamp(min=1e-12).sqrt()``.
    """
    sq = emb.pow(2).sum(dim=1, keepdim=True)
    d2 = (sq + sq.t()).addmm(emb, emb.t(), beta=1, alpha=-2)
    return d2.clamp(min=1e-12).sqrt()


def soft_margin_triplet_loss(emb: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Batch-hard soft-margin triplet loss: mean over anchors of softplus(d_ap - d_an).

    d_ap is the anchor's farthest same-identity sample (itself excluded), d_an its closest
    other-identity sample. Anchors lacking a positive or a negative are left out; softplus is
    log(1 + exp(.)) without overflow.
    """
    _check_batch(emb, pids)
    dist = pairwise_euclidean(emb)
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=emb.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    if emb.device.type != "meta" and not bool(valid.any()):  # meta tensors hold no values
        raise ValueError(
            f"no anchor has both a positive and a negative in this batch of {len(pids)} "
            f"samples with {len(torch.unique(pids))} identities; build batches with "
            "pk_batches (P >= 2 identities x K >= 2 samples each)"
        )
    d_ap = dist.masked_fill(~pos_mask, float("-inf")).amax(dim=1)
    d_an = dist.masked_fill(~neg_mask, float("inf")).amin(dim=1)
    # a masked mean (no boolean indexing): shapes stay data-independent on any device
    per_anchor = F.softplus(torch.where(valid, d_ap - d_an, torch.zeros_like(d_ap)))
    return (per_anchor * valid).sum() / valid.sum()


class BNNeck(nn.Module):
    """BatchNorm1d with a frozen zero bias, then a bias-free linear identity classifier.

    The frozen bias keeps the BN features centred for the classifier's hyperplanes through the
    origin (Bag of Tricks); forward returns (bn_features, logits). Initialisation as fast-reid:
    BN weight 1, classifier weights N(0, 0.001).
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"BNNeck.{name} must be a positive int but got {value!r}")
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.bn(emb)
        return feats, self.classifier(feats)


@dataclass(frozen=True)
class ReidCriterion:
    """loss = triplet(pre-BN embedding) + lambda_id * CE(BNNeck logits, pids), as a dict."""

    lambda_id: float = 1.0

    def __post_init__(self) -> None:
        value = self.lambda_id
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"ReidCriterion.lambda_id must be a finite number but got "
                             f"{value!r}; the paper uses 1")
        if value < 0:
            raise ValueError(f"ReidCriterion.lambda_id cannot be negative but got {value!r}; "
                             "use 0 to train with the triplet loss alone (the paper uses 1)")

    def __call__(
        self, emb: torch.Tensor, logits: torch.Tensor, pids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if logits.dim() != 2 or len(logits) != len(pids):
            raise ValueError(f"logits must be (N, num_classes) with N = len(pids) = {len(pids)} "
                             f"but got shape {tuple(logits.shape)}")
        triplet = soft_margin_triplet_loss(emb, pids)
        ident = F.cross_entropy(logits, pids)
        return {"loss": triplet + self.lambda_id * ident, "triplet": triplet, "id": ident}


def _check_batch(emb: torch.Tensor, pids: torch.Tensor) -> None:
    if emb.dim() != 2:
        raise ValueError(f"emb must be 2-D (N, D) but got shape {tuple(emb.shape)}")
    if pids.dim() != 1 or len(pids) != len(emb):
        raise ValueError(f"pids must be 1-D with one id per row of emb ({len(emb)}) but got "
                         f"shape {tuple(pids.shape)}")
