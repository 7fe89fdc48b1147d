"""The slow oracle: a per-query NumPy loop written the way torchreid's ``eval_market1501`` is.

Kept deliberately plain (loop over queries, argsort, mask, cumsum) so it reads side by side
with torchreid ``torchreid/metrics/rank.py::eval_market1501`` and fast-reid
``fastreid/evaluation/rank.py::eval_market1501`` (which adds mINP). The tests and
``benchmarks/reid_eval.py`` check the vectorised :mod:`trainers.reid.evaluate` against it.

``precision="loop"`` computes each query's precision curve with torchreid's Python list
comprehension (``[x / (i + 1.) for i, x in enumerate(cumsum)]``), the step that makes the
original slow; ``precision="numpy"`` does the same division as one NumPy operation per query
(same values, a much stronger baseline for timing).

Deliberate differences from those libraries, shared with the vectorised evaluator:
``kind="stable"`` in the argsort (theirs is NumPy's unstable default, so exact ties are ordered
arbitrarily there), a float64 CMC (theirs is float32) and ``ValueError`` instead of ``assert``.
Do not use it for real evaluation: it is slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class ReferenceMetrics:
    """What the per-query loop returns; field names match :class:`ReidMetrics`."""

    mAP: float
    mINP: float
    cmc: np.ndarray
    num_valid_queries: int


def eval_market1501_reference(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 10,
    q_sceneids: np.ndarray | None = None,
    g_sceneids: np.ndarray | None = None,
    precision: Literal["loop", "numpy"] = "loop",
) -> ReferenceMetrics:
    """Market-1501 protocol, one query at a time (scene ids switch to the MSVR310 rule)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    q_group, g_group = (q_camids, g_camids) if q_sceneids is None else (q_sceneids, g_sceneids)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(distmat.shape[0]):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_group[order] == q_group[q_idx])
        raw_cmc = matches[q_idx][~remove]
        if not np.any(raw_cmc):
            continue  # identity absent from the gallery, or only same-camera matches
        cmc = raw_cmc.cumsum()
        last_pos = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[last_pos] / (last_pos + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        all_ap.append(_average_precision(raw_cmc, precision))
    if not all_ap:
        raise ValueError("no query has a valid match")
    return ReferenceMetrics(
        mAP=float(np.mean(all_ap)),
        mINP=float(np.mean(all_inp)),
        cmc=np.asarray(all_cmc, dtype=np.float64).sum(axis=0) / len(all_ap),
        num_valid_queries=len(all_ap),
    )


def _average_precision(raw_cmc: np.ndarray, precision: str) -> float:
    """torchreid's AP: precision at every hit, summed, over the number of hits."""
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum()
    if precision == "loop":
        curve = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)])
    else:
        curve = tmp_cmc / np.arange(1.0, len(tmp_cmc) + 1.0)
    return (curve * raw_cmc).sum() / num_rel
