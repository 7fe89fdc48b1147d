"""Identity-balanced P x K batches for the batch-hard triplet loss.

Same scheme as torchreid's ``RandomIdentitySampler`` and fast-reid's ``NaiveIdentitySampler``:
every identity's images are shuffled and cut into groups of K (an identity with fewer than K
images is first sampled up to K with replacement; a last incomplete group is dropped), then
batches repeatedly take P distinct identities at random that still have a group left, one
group each. An epoch ends when fewer than P identities have groups left. Everything depends
only on (seed, epoch), so a restored run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import numpy as np
import torch


def pk_batches(
    pids: Sequence[int] | np.ndarray | torch.Tensor,
    p: int,
    k: int = 4,
    seed: int = 0,
    epoch: int = 0,
) -> list[list[int]]:
    """Batches of dataset indices: P identities x K samples each, grouped by identity."""
    labels = _labels(pids)
    _check(p, k, seed, epoch, labels)
    rng = np.random.default_rng([seed, epoch])
    groups = _identity_groups(labels, k, rng)
    batches: list[list[int]] = []
    available = sorted(groups)
    while len(available) >= p:
        chosen = rng.choice(len(available), size=p, replace=False)
        picked = [available[i] for i in chosen]
        batches.append([idx for pid in picked for idx in groups[pid].pop()])
        available = [pid for pid in available if groups[pid]]
    return batches


def _identity_groups(
    labels: np.ndarray, k: int, rng: np.random.Generator
) -> dict[int, list[list[int]]]:
    """Per identity, its shuffled images cut into groups of exactly k."""
    groups: dict[int, list[list[int]]] = {}
    for pid in np.unique(labels):
        idxs = np.flatnonzero(labels == pid)
        if len(idxs) < k:
            idxs = rng.choice(idxs, size=k, replace=True)
        idxs = rng.permutation(idxs)
        usable = len(idxs) - len(idxs) % k
        groups[int(pid)] = [idxs[i : i + k].tolist() for i in range(0, usable, k)]
    return groups


def _labels(pids: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    labels = pids.cpu().numpy() if isinstance(pids, torch.Tensor) else np.asarray(pids)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"pids must be a 1-D sequence of integer identities but got dtype "
                         f"{labels.dtype} and shape {labels.shape}")
    return labels


def _check(p: int, k: int, seed: int, epoch: int, labels: np.ndarray) -> None:
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 2:
        raise ValueError(f"k must be an int >= 2 (the triplet loss needs a positive per anchor) "
                         f"but got {k!r}")
    if isinstance(p, bool) or not isinstance(p, Integral) or p < 2:
        raise ValueError(f"p must be an int >= 2 (the triplet loss needs a negative per anchor) "
                         f"but got {p!r}")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise ValueError(f"{name} must be a non-negative int but got {value!r}")
    num_ids = len(np.unique(labels))
    if num_ids < p:
        raise ValueError(f"p={p} identities per batch but the data has only {num_ids}; "
                         f"lower p to at most {num_ids}")
