"""Time the vectorised reid evaluator against the per-query NumPy loop; check equal values.

Run from the repository root: ``python -m benchmarks.reid_eval`` (``--help`` for sizes).

Default problem: 2,000 queries x 10,000 gallery items, 256-d features, 500 identities,
6 cameras, seed 0. Features are an identity centre plus noise, so the metrics are not trivial.
All evaluators receive the same float32 distance matrix. Two per-query references are timed:

* ``torchreid-style loop``: :func:`eval_market1501_reference` with ``precision="loop"``,
  written the way torchreid's Python ``eval_market1501`` is (its precision curve is a Python
  list comprehension over the whole gallery, per query). The headline speed-up is against it.
* ``numpy-per-query loop``: the same loop with that one line as a NumPy division, a fairer
  baseline, whose time is mostly NumPy's (fast, SIMD) argsort; expect a much smaller ratio.

Torch runs on ``--threads`` threads (default 1, so that both sides are single-threaded and the
numbers mean something on a shared machine; more threads help only on idle cores).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from trainers.reid import ReidMetrics, compute_distance_matrix, evaluate_distmat, evaluate_reid
from trainers.reid.reference import ReferenceMetrics, eval_market1501_reference


def make_problem(args: argparse.Namespace) -> dict[str, Any]:
    """Random features around identity centres, random identities and cameras."""
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.ids, args.dim)).astype(np.float32)
    q_pids = rng.integers(0, args.ids, args.queries)
    g_pids = rng.integers(0, args.ids, args.gallery)

    def feats(pids: np.ndarray) -> torch.Tensor:
        noise = rng.standard_normal((len(pids), args.dim)).astype(np.float32)
        return torch.from_numpy(centres[pids] + 2.0 * noise)

    return {
        "qf": feats(q_pids), "gf": feats(g_pids), "q_pids": q_pids, "g_pids": g_pids,
        "q_cams": rng.integers(0, args.cams, args.queries),
        "g_cams": rng.integers(0, args.cams, args.gallery),
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def max_abs_diff(ours: ReidMetrics, ref: ReferenceMetrics) -> float:
    """Largest |difference| over mAP, mINP and every CMC entry."""
    cmc = np.abs(np.asarray(ours.cmc) - ref.cmc).max()
    return float(max(abs(ours.mAP - ref.mAP), abs(ours.mINP - ref.mINP), cmc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("queries", 2000), ("gallery", 10000), ("dim", 256), ("ids", 500),
                          ("cams", 6), ("seed", 0), ("max-rank", 10), ("chunk-size", 256),
                          ("threads", 1)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pb = make_problem(args)
    labels = (pb["q_pids"], pb["g_pids"], pb["q_cams"], pb["g_cams"])
    distmat = compute_distance_matrix(pb["qf"], pb["gf"])
    warm = (labels[0][:64], labels[1], labels[2][:64], labels[3])
    evaluate_distmat(distmat[:64], *warm, max_rank=args.max_rank)  # warm-up, not timed
    opts = {"max_rank": args.max_rank, "chunk_size": args.chunk_size}
    ours, t_ours = timed(lambda: evaluate_distmat(distmat, *labels, **opts))
    from_feats, t_feats = timed(lambda: evaluate_reid(pb["qf"], pb["gf"], *labels, **opts))
    np_args = (distmat.numpy(), *labels, args.max_rank)
    ref_np, t_np = timed(lambda: eval_market1501_reference(*np_args, precision="numpy"))
    ref_loop, t_loop = timed(lambda: eval_market1501_reference(*np_args, precision="loop"))

    print(f"problem: {args.queries} queries x {args.gallery} gallery, dim {args.dim}, "
          f"{args.ids} ids, {args.cams} cameras, seed {args.seed}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"metrics: mAP {ours.mAP:.6f}  mINP {ours.mINP:.6f}  rank1 {ours.rank1:.4f}  "
          f"rank5 {ours.rank5:.4f}  rank10 {ours.rank10:.4f}  valid {ours.num_valid_queries}  "
          f"skipped {ours.num_skipped_queries}")
    print(f"vectorised torch, from distmat : {t_ours:7.2f} s")
    print(f"vectorised torch, from features: {t_feats:7.2f} s  (distances included; "
          f"same metrics: {from_feats == ours})")
    print(f"numpy-per-query loop           : {t_np:7.2f} s  speedup {t_np / t_ours:5.1f}x  "
          f"max|diff| {max_abs_diff(ours, ref_np)}")
    print(f"torchreid-style loop           : {t_loop:7.2f} s  speedup {t_loop / t_ours:5.1f}x  "
          f"max|diff| {max_abs_diff(ours, ref_loop)}")
    print(f"speedup: {t_loop / t_ours:.1f}x  max|diff|: {max_abs_diff(ours, ref_loop)}")


if __name__ == "__main__":
    main()
