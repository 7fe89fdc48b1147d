"""Re-identification ranking metrics (mAP, CMC, mINP), vectorised in torch.

Protocol (SPEC section 7). For every query the gallery is ranked by distance, ascending; gallery
items with the query's identity AND its camera are removed ("junk": the same view of the same
object is too easy a match); a query left with no positive is skipped; then

* CMC[k] = 1 if the first positive is within rank k (ranks counted after junk removal);
* AP = sum over positives of (precision at that positive's rank) / number of positives;
* INP = number of positives / rank of the last positive (the AGW paper's inverse negative
  penalty: how deep one must look to retrieve every positive);

and each is averaged over the valid queries.

What we checked in the reference code (torchreid ``torchreid/metrics/rank.py::eval_market1501``
and its Cython twin ``rank_cy.pyx``; fast-reid ``fastreid/evaluation/rank.py::eval_market1501``)
and where we differ on purpose:

* Ranking. Both call ``np.argsort(distmat, axis=1)``, i.e. NumPy's default
  ``kind="quicksort"`` (an introsort), which is NOT stable: the order of gallery items at
  exactly equal distance is unspecified and may change with the NumPy version or SIMD backend.
  We rank stably: tied items keep gallery order (lower gallery index first), exactly like
  ``np.argsort(kind="stable")``. Without exact ties the rankings, hence all metrics, are equal.
* AP is torchreid's formula: ``cumsum(hits) / rank`` taken at the hits, summed, divided by the
  number of positives. INP is fast-reid's ``cmc[last] / (last + 1)`` (torchreid's
  ``eval_market1501`` returns only CMC and mAP).
* CMC. The libraries average float32 0/1 rows; we count first-positive ranks and divide in
  float64 (their float32 value is the rounding of ours).
* ``max_rank`` larger than the gallery: the libraries print a note and clamp; we raise, because
  a silently shorter CMC curve breaks result tables. "No valid query" is an assert there, a
  ``ValueError`` here.
* MSVR310. When scene ids are given, the junk rule becomes "same identity AND same scene",
  replacing the camera rule, as in the published MSVR310 evaluation code (``eval_func_msrv``:
  ``remove = (g_pids[order] == q_pid) & (g_sceneids[order] == q_sceneid)``).

Queries whose identity is absent from the gallery, or whose only gallery matches are junk, are
skipped and counted in ``num_skipped_queries`` (as the libraries do silently); only when every
query is skipped is it an error.

Distances follow torchreid's ``compute_distance_matrix``: squared Euclidean (same ranking as
Euclidean, one ``addmm``) or cosine distance ``1 - cos``. Queries are processed in chunks of
``chunk_size`` rows against the full gallery, on the device the inputs live on, so memory is
O(chunk_size x gallery) and there is no per-query Python loop. Only the ranks of same-identity
gallery items matter, so rows are not fully sorted: see ``_same_identity_ranks`` (exact, the
same ranks a stable sort gives; ~3x faster than a full ``torch.sort`` single-threaded on CPU).
Both entry points run under ``torch.no_grad()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("euclidean", "cosine")
IdsLike = torch.Tensor | np.ndarray | Sequence[int]
MatrixLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class ReidMetrics:
    """Averages over valid queries; ``cmc[k-1]`` is CMC at rank k for k = 1..max_rank.

    ``rank1``/``rank5``/``rank10`` are computed from the first-positive ranks directly, so they
    exist whatever ``max_rank`` is; they equal ``cmc[k-1]`` whenever k <= max_rank.
    """

    mAP: float
    mINP: float
    cmc: tuple[float, ...]
    rank1: float
    rank5: float
    rank10: float
    num_valid_queries: int
    num_skipped_queries: int

    def as_dict(self) -> dict[str, float | int | list[float]]:
        """Plain types, ready for a results row or JSON."""
        out = asdict(self)
        out["cmc"] = list(self.cmc)
        return out


def compute_distance_matrix(
    query_feats: torch.Tensor, gallery_feats: torch.Tensor, metric: str = "euclidean"
) -> torch.Tensor:
    """(Nq, Ng) distances as torchreid computes them: squared Euclidean or 1 - cosine."""
    _check_features(query_feats, gallery_feats)
    _check_metric(metric)
    return _distance(query_feats, gallery_feats, metric)


@torch.no_grad()
def evaluate_reid(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    query_pids: IdsLike,
    gallery_pids: IdsLike,
    query_camids: IdsLike,
    gallery_camids: IdsLike,
    *,
    query_sceneids: IdsLike | None = None,
    gallery_sceneids: IdsLike | None = None,
    metric: str = "euclidean",
    max_rank: int = 10,
    chunk_size: int = 256,
) -> ReidMetrics:
    """Rank the gallery for every query from features; the full distance matrix is never held."""
    _check_features(query_feats, gallery_feats)
    _check_metric(metric)
    _check_sizes(len(gallery_feats), max_rank, chunk_size)
    q_pid, g_pid, q_grp, g_grp = _labels(
        len(query_feats), len(gallery_feats), query_feats.device, query_pids, gallery_pids,
        query_camids, gallery_camids, query_sceneids, gallery_sceneids,
    )
    stats = [
        _rank_stats(
            _distance(query_feats[s : s + chunk_size], gallery_feats, metric),
            q_pid[s : s + chunk_size], g_pid, q_grp[s : s + chunk_size], g_grp,
        )
        for s in range(0, len(query_feats), chunk_size)
    ]
    return _summarise(stats, max_rank)


@torch.no_grad()
def evaluate_distmat(
    distmat: MatrixLike,
    query_pids: IdsLike,
    gallery_pids: IdsLike,
    query_camids: IdsLike,
    gallery_camids: IdsLike,
    *,
    query_sceneids: IdsLike | None = None,
    gallery_sceneids: IdsLike | None = None,
    max_rank: int = 10,
    chunk_size: int = 256,
) -> ReidMetrics:
    """Same protocol on a precomputed (Nq, Ng) distance matrix (smaller = more similar)."""
    dist = torch.as_tensor(distmat)
    if dist.dim() != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery) but got shape "
                         f"{tuple(dist.shape)}")
    _check_finite("distmat", dist)
    num_q, num_g = dist.shape
    _check_sizes(num_g, max_rank, chunk_size)
    q_pid, g_pid, q_grp, g_grp = _labels(
        num_q, num_g, dist.device, query_pids, gallery_pids, query_camids, gallery_camids,
        query_sceneids, gallery_sceneids,
    )
    stats = [
        _rank_stats(dist[s : s + chunk_size], q_pid[s : s + chunk_size], g_pid,
                    q_grp[s : s + chunk_size], g_grp)
        for s in range(0, num_q, chunk_size)
    ]
    return _summarise(stats, max_rank)


# --- core -----------------------------------------------------------------------------------

RankStats = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _rank_stats(
    dist: torch.Tensor,
    q_pid: torch.Tensor,
    g_pid: torch.Tensor,
    q_grp: torch.Tensor,
    g_grp: torch.Tensor,
) -> RankStats:
    """Per query of one chunk: (number of positives, first and last positive rank, AP).

    Works on the sparse list of same-identity items (positives and junk) in rank order. Ranks
    are 1-based and counted over kept (non-junk) items only. For a query with no positive, AP
    is NaN and the ranks are 0; ``_summarise`` drops those rows.
    """
    num_rows = len(dist)
    rows, cols, rank = _same_identity_ranks(dist, g_pid[None, :] == q_pid[:, None])
    junk = g_grp[cols] == q_grp[rows]
    junk_before = _segment_cumsum(junk, rows, num_rows) - junk.long()
    hit_number = _segment_cumsum(~junk, rows, num_rows)
    hit = ~junk
    rows, kept_rank, hit_number = rows[hit], (rank - junk_before)[hit], hit_number[hit]
    num_pos = torch.bincount(rows, minlength=num_rows)
    precision = hit_number.double() / kept_rank.double()
    ap_sum = torch.zeros(num_rows, dtype=torch.float64, device=dist.device)
    ap_sum.index_add_(0, rows, precision)
    first = torch.zeros_like(num_pos).scatter_reduce_(0, rows, kept_rank, "amin",
                                                      include_self=False)
    last = torch.zeros_like(num_pos).scatter_reduce_(0, rows, kept_rank, "amax",
                                                     include_self=False)
    return num_pos, first, last, ap_sum / num_pos.double()


def _same_identity_ranks(
    dist: torch.Tensor, same_pid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, gallery column, 1-based rank in the row's stable order) of every same-id item.

    Equal to a stable sort of each row (ties broken by gallery index), without sorting whole
    rows, which dominated the run time: each row's distances are cut into monotone buckets,
    so an item's rank is the count of items in lower buckets (a histogram) plus its position
    in an exact stable sort of just the buckets that hold a same-identity item (a few items
    each). Bucketing only changes speed, never the result. Ordered by (row, rank).
    """
    num_rows, num_gallery = dist.shape
    num_buckets = max(1, num_gallery // _ITEMS_PER_BUCKET)
    bucket = _bucket_ids(dist, num_buckets)
    offsets = torch.arange(num_rows, device=dist.device)[:, None] * num_buckets
    counts = torch.bincount((bucket + offsets).view(-1), minlength=num_rows * num_buckets)
    counts = counts.view(num_rows, num_buckets)
    below = counts.cumsum(dim=1) - counts  # items in strictly lower buckets of the row
    s_rows, s_cols = same_pid.nonzero(as_tuple=True)
    marked = torch.zeros_like(counts, dtype=torch.bool)
    marked[s_rows, bucket[s_rows, s_cols]] = True
    rows, cols = marked.gather(1, bucket).nonzero(as_tuple=True)
    key = bucket[rows, cols]
    group = rows * num_buckets + key
    order = torch.sort(dist[rows, cols], stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]  # by (row, bucket, dist, col)
    rows, cols, key, group = rows[order], cols[order], key[order], group[order]
    rank = below[rows, key] + _position_in_group(group) + 1
    keep = same_pid[rows, cols]
    return rows[keep], cols[keep], rank[keep]


_ITEMS_PER_BUCKET = 4  # speed knob only: gallery items per distance bucket, on average


def _bucket_ids(dist: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Bucket index in [0, num_buckets) per item, non-decreasing in distance within each row.

    Each step (subtract, multiply by a non-negative scale, truncate, clamp) is monotone under
    IEEE rounding, which is all exactness needs. Constant rows and rows whose span is not
    finite get scale 0 (everything in one bucket) instead of producing inf or NaN.
    """
    lo, hi = dist.aminmax(dim=1, keepdim=True)
    span = hi - lo
    finite_span = torch.isfinite(span)
    scale = torch.where(finite_span & (span > 0), num_buckets / span, 0.0)
    scale = torch.where(torch.isfinite(scale), scale, 0.0)
    lo = torch.where(finite_span, lo, 0.0)
    return ((dist - lo) * scale).long().clamp_(0, num_buckets - 1)


def _position_in_group(keys: torch.Tensor) -> torch.Tensor:
    """0-based position of each element within its run of equal values (keys are sorted)."""
    index = torch.arange(len(keys), device=keys.device)
    if len(keys) == 0:
        return index
    starts = torch.ones_like(keys, dtype=torch.bool)
    starts[1:] = keys[1:] != keys[:-1]
    return index - torch.cummax(torch.where(starts, index, 0), dim=0).values


def _segment_cumsum(flags: torch.Tensor, rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Inclusive running count of ``flags`` restarted at each row (``rows`` is sorted)."""
    counts = flags.long()
    per_row = torch.zeros(num_rows, dtype=torch.long, device=flags.device)
    per_row.index_add_(0, rows, counts)
    before_row = per_row.cumsum(0) - per_row
    return counts.cumsum(0) - before_row[rows]


def _summarise(stats: list[RankStats], max_rank: int) -> ReidMetrics:
    """Average the valid queries' statistics; raise when no query is valid."""
    if not stats:
        raise ValueError("no query has a valid match: the query set is empty")
    num_pos, first, last, ap = (torch.cat(parts) for parts in zip(*stats, strict=True))
    valid = num_pos > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"no query has a valid match: all {len(num_pos)} queries have no gallery item of "
            "their identity outside their own camera (or scene); check that query and gallery "
            "come from the same identity set and that camera ids are right"
        )
    first = first[valid]
    inp = num_pos[valid].double() / last[valid].double()
    ranks = torch.arange(1, max_rank + 1, device=first.device)
    cmc = (first[:, None] <= ranks[None, :]).sum(dim=0).double() / num_valid
    return ReidMetrics(
        mAP=ap[valid].mean().item(),
        mINP=inp.mean().item(),
        cmc=tuple(cmc.tolist()),
        rank1=_hit_rate(first, 1),
        rank5=_hit_rate(first, 5),
        rank10=_hit_rate(first, 10),
        num_valid_queries=num_valid,
        num_skipped_queries=len(num_pos) - num_valid,
    )


def _hit_rate(first: torch.Tensor, k: int) -> float:
    return ((first <= k).sum().double() / len(first)).item()


def _distance(query: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return 1 - F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).t()
    sq_q = query.pow(2).sum(dim=1, keepdim=True)
    sq_g = gallery.pow(2).sum(dim=1, keepdim=True).t()
    return (sq_q + sq_g).addmm_(query, gallery.t(), beta=1, alpha=-2)


# --- validation -----------------------------------------------------------------------------


def _check_features(query_feats: torch.Tensor, gallery_feats: torch.Tensor) -> None:
    for name, feats in (("query_feats", query_feats), ("gallery_feats", gallery_feats)):
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats)
            raise ValueError(f"{name} must be a 2-D torch.Tensor (N, D) but got {shape}")
        _check_finite(name, feats)
    if query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(
            f"query_feats has dim {query_feats.shape[1]} but gallery_feats has dim "
            f"{gallery_feats.shape[1]}; both must come from the same embedding"
        )
    if query_feats.device != gallery_feats.device:
        raise ValueError(f"query_feats is on {query_feats.device} but gallery_feats on "
                         f"{gallery_feats.device}; move both to one device")


def _check_finite(name: str, values: torch.Tensor) -> None:
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf values; fix the model or the "
                         "feature extraction that produced them")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)} but got {metric!r}")


def _check_sizes(num_gallery: int, max_rank: int, chunk_size: int) -> None:
    if isinstance(max_rank, bool) or not isinstance(max_rank, Integral) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive int but got {max_rank!r}")
    if num_gallery < max_rank:
        raise ValueError(
            f"the gallery has {num_gallery} items but max_rank={max_rank}; lower max_rank to "
            f"at most {num_gallery}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int but got {chunk_size!r}")


def _labels(
    num_q: int,
    num_g: int,
    device: torch.device,
    query_pids: IdsLike,
    gallery_pids: IdsLike,
    query_camids: IdsLike,
    gallery_camids: IdsLike,
    query_sceneids: IdsLike | None,
    gallery_sceneids: IdsLike | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated (query pids, gallery pids, query junk group, gallery junk group).

    The junk group is the camera, or the scene when scene ids are given (MSVR310 rule).
    """
    if (query_sceneids is None) != (gallery_sceneids is None):
        raise ValueError("query_sceneids and gallery_sceneids must be given together (MSVR310 "
                         "same-scene rule) or both left as None (same-camera rule)")
    q_pid = _ids("query_pids", query_pids, num_q, device)
    g_pid = _ids("gallery_pids", gallery_pids, num_g, device)
    q_cam = _ids("query_camids", query_camids, num_q, device)
    g_cam = _ids("gallery_camids", gallery_camids, num_g, device)
    if query_sceneids is None or gallery_sceneids is None:
        return q_pid, g_pid, q_cam, g_cam
    q_scene = _ids("query_sceneids", query_sceneids, num_q, device)
    g_scene = _ids("gallery_sceneids", gallery_sceneids, num_g, device)
    return q_pid, g_pid, q_scene, g_scene


def _ids(name: str, values: IdsLike, expected: int, device: torch.device) -> torch.Tensor:
    try:
        ids = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a 1-D sequence of integers: {err}") from err
    if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"{name} must be a 1-D sequence of integers but got dtype {ids.dtype} "
                         f"and shape {tuple(ids.shape)}")
    if len(ids) != expected:
        raise ValueError(f"{name} has {len(ids)} entries but there are {expected} "
                         f"{'query' if name.startswith('query') else 'gallery'} items; "
                         "give one id per row of the features / distance matrix")
    return ids.to(device=device, dtype=torch.int64)
