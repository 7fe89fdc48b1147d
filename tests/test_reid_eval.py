"""ReID evaluator: hand-computed metrics, protocol corner cases, the NumPy oracle, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainers.reid import ReidMetrics, compute_distance_matrix, evaluate_distmat, evaluate_reid
from trainers.reid.reference import eval_market1501_reference

# Gallery used by the hand-computed cases: index -> (pid, cam)
#   g0 (1, 1)  g1 (0, 0)  g2 (0, 1)  g3 (2, 0)  g4 (3, 1)  g5 (0, 2)  g6 (1, 0)
G_PIDS = [1, 0, 0, 2, 3, 0, 1]
G_CAMS = [1, 0, 1, 0, 1, 2, 0]


@pytest.mark.parametrize("chunk_size", [1, 256])
def test_hand_computed_metrics_with_skipped_queries(chunk_size: int) -> None:
    # Query A (pid 0, cam 0). Sorted: g2 .1 pos | g1 .2 junk (pid 0 cam 0) | g6 .3 | g0 .4 |
    #   g4 .5 | g5 .6 pos | g3 .7.  Kept ranks of the positives: 1 and 5.
    #   AP = (1/1 + 2/5) / 2 = 0.7 ; INP = 2 positives / rank 5 = 0.4 ; first hit at rank 1.
    # Query B (pid 1, cam 1). Sorted: g0 .1 junk (pid 1 cam 1) | g2 .2 | g3 .3 | g6 .4 pos | ...
    #   Kept rank of the only positive: 3.  AP = 1/3 ; INP = 1/3 ; first hit at rank 3.
    # Query C (pid 9): identity absent from the gallery -> skipped.
    # Query D (pid 2, cam 0): its only gallery match g3 is also cam 0 -> junk -> skipped.
    # mAP = (0.7 + 1/3) / 2 = 31/60 ; mINP = (0.4 + 1/3) / 2 = 11/30
    # CMC@1..5 = [1/2, 1/2, 2/2, 2/2, 2/2]
    distmat = torch.tensor(
        [
            [0.4, 0.2, 0.1, 0.7, 0.5, 0.6, 0.3],
            [0.1, 0.5, 0.2, 0.3, 0.6, 0.7, 0.4],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
            [0.7, 0.6, 0.5, 0.1, 0.3, 0.2, 0.4],
        ],
        dtype=torch.float64,
    )
    m = evaluate_distmat(distmat, [0, 1, 9, 2], G_PIDS, [0, 1, 0, 0], G_CAMS, max_rank=5,
                         chunk_size=chunk_size)
    assert m.mAP == pytest.approx(31 / 60, abs=1e-12)
    assert m.mINP == pytest.approx(11 / 30, abs=1e-12)
    assert m.cmc == (0.5, 0.5, 1.0, 1.0, 1.0)
    assert (m.rank1, m.rank5, m.rank10) == (0.5, 1.0, 1.0)
    assert (m.num_valid_queries, m.num_skipped_queries) == (2, 2)


def test_query_skipped_when_only_positive_is_same_camera() -> None:
    # q0 (pid 0, cam 0): its only match g0 is cam 0 -> removed -> skipped.
    # q1 (pid 1, cam 1): g0 .1 other | g1 .2 pos (cam 0) -> AP = 1/2, INP = 1/2, CMC@1 = 0.
    m = evaluate_distmat([[0.1, 0.2], [0.1, 0.2]], [0, 1], [0, 1], [0, 1], [0, 0], max_rank=1)
    assert (m.num_valid_queries, m.num_skipped_queries) == (1, 1)
    assert (m.mAP, m.mINP, m.cmc) == (0.5, 0.5, (0.0,))


@pytest.mark.parametrize(
    ("g_pids", "g_cams", "expected_ap", "expected_inp"),
    [
        # Sorted (stable): g3 .5 | g0 1.0 other | g1 1.0 pos | g2 1.0 pos -> ranks 3, 4
        # AP = (1/3 + 2/4) / 2 = 5/12 ; INP = 2/4
        ([1, 0, 0, 2], [1, 1, 2, 1], 5 / 12, 2 / 4),
        # Same distances, positives first in gallery order: g3 .5 | g0 pos | g1 pos | g2 other
        # ranks 2, 3 -> AP = (1/2 + 2/3) / 2 = 7/12 ; INP = 2/3
        ([0, 0, 1, 2], [1, 2, 1, 1], 7 / 12, 2 / 3),
    ],
)
def test_ties_keep_gallery_order(
    g_pids: list[int], g_cams: list[int], expected_ap: float, expected_inp: float
) -> None:
    distmat = np.array([[1.0, 1.0, 1.0, 0.5]])
    m = evaluate_distmat(distmat, [0], g_pids, [0], g_cams, max_rank=4)
    assert m.mAP == pytest.approx(expected_ap, abs=1e-12)
    assert m.mINP == pytest.approx(expected_inp, abs=1e-12)
    ref = eval_market1501_reference(
        distmat, np.array([0]), np.array(g_pids), np.array([0]), np.array(g_cams), max_rank=4
    )
    assert m.mAP == pytest.approx(ref.mAP, abs=1e-15)
    assert m.cmc == tuple(ref.cmc)


def test_msvr_scene_rule_replaces_camera_rule() -> None:
    # Query: pid 0, cam 0, scene 0. Gallery (pid, cam, scene, dist):
    #   g0 (0, 1, 0, .1)  g1 (1, 1, 0, .2)  g2 (0, 0, 1, .3)  g3 (2, 0, 1, .4)
    # Camera rule: g2 is junk; g0 pos at rank 1 -> AP 1, INP 1.
    # Scene rule:  g0 is junk (same scene); kept g1 | g2 pos | g3 -> AP 1/2, INP 1/2, CMC@1 0.
    distmat = [[0.1, 0.2, 0.3, 0.4]]
    args = (distmat, [0], [0, 1, 0, 2], [0], [1, 1, 0, 0])
    by_cam = evaluate_distmat(*args, max_rank=2)
    by_scene = evaluate_distmat(*args, query_sceneids=[0], gallery_sceneids=[0, 0, 1, 1],
                                max_rank=2)
    assert (by_cam.mAP, by_cam.mINP, by_cam.cmc) == (1.0, 1.0, (1.0, 1.0))
    assert (by_scene.mAP, by_scene.mINP, by_scene.cmc) == (0.5, 0.5, (0.0, 1.0))


def test_cosine_and_euclidean_rank_differently() -> None:
    # q = (1, 0); a = (10, 1) is the positive, b = (0.9, 0.5) a negative.
    # Squared Euclidean (torchreid): |q-a|^2 = 81 + 1 = 82, |q-b|^2 = 0.01 + 0.25 = 0.26
    #   -> b first, positive at rank 2 -> AP 1/2.
    # Cosine distance: 1 - 10/sqrt(101) ~ 0.005 < 1 - 0.9/sqrt(1.06) ~ 0.126 -> AP 1.
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    g = torch.tensor([[10.0, 1.0], [0.9, 0.5]], dtype=torch.float64)
    euclid = compute_distance_matrix(q, g, "euclidean")
    cosine = compute_distance_matrix(q, g, "cosine")
    torch.testing.assert_close(euclid, torch.tensor([[82.0, 0.26]], dtype=torch.float64))
    expected_cos = [[1 - 10 / math.sqrt(101), 1 - 0.9 / math.sqrt(1.06)]]
    torch.testing.assert_close(cosine, torch.tensor(expected_cos, dtype=torch.float64))
    labels = ([0], [0, 1], [0], [1, 1])
    assert evaluate_reid(q, g, *labels, metric="euclidean", max_rank=2).mAP == 0.5
    assert evaluate_reid(q, g, *labels, metric="cosine", max_rank=2).mAP == 1.0


def _random_problem(seed: int, num_q: int = 30, num_g: int = 90, tied: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    ids = 12
    centres = rng.standard_normal((ids, 8))
    q_pids, g_pids = rng.integers(0, ids + 2, num_q), rng.integers(0, ids, num_g)
    qf = torch.from_numpy(centres[q_pids % ids] + rng.standard_normal((num_q, 8)))
    gf = torch.from_numpy(centres[g_pids] + rng.standard_normal((num_g, 8)))
    distmat = compute_distance_matrix(qf, gf)
    if tied:  # coarse distances: many exact ties
        distmat = distmat.round()
    return {
        "qf": qf, "gf": gf, "distmat": distmat,
        "q_pids": q_pids, "g_pids": g_pids,
        "q_cams": rng.integers(0, 3, num_q), "g_cams": rng.integers(0, 3, num_g),
        "q_scenes": rng.integers(0, 2, num_q), "g_scenes": rng.integers(0, 2, num_g),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("scenes", [False, True])
def test_equals_per_query_reference(seed: int, tied: bool, scenes: bool) -> None:
    pb = _random_problem(seed, tied=tied)
    scene_kw = {"query_sceneids": pb["q_scenes"], "gallery_sceneids": pb["g_scenes"]}
    ours = evaluate_distmat(pb["distmat"], pb["q_pids"], pb["g_pids"], pb["q_cams"],
                            pb["g_cams"], max_rank=20, **(scene_kw if scenes else {}))
    ref = eval_market1501_reference(
        pb["distmat"].numpy(), pb["q_pids"], pb["g_pids"], pb["q_cams"], pb["g_cams"],
        max_rank=20, q_sceneids=pb["q_scenes"] if scenes else None,
        g_sceneids=pb["g_scenes"] if scenes else None,
    )
    assert ours.mAP == pytest.approx(ref.mAP, abs=1e-12)
    assert ours.mINP == pytest.approx(ref.mINP, abs=1e-12)
    np.testing.assert_allclose(ours.cmc, ref.cmc, rtol=0, atol=1e-12)
    assert ours.num_valid_queries == ref.num_valid_queries
    assert ours.num_skipped_queries == 30 - ref.num_valid_queries


@pytest.mark.parametrize("kind", ["constant", "outlier", "huge_span", "tiny_span", "negative"])
def test_extreme_distance_values_match_reference(kind: str) -> None:
    # The evaluator buckets each row's distances before an exact sort inside buckets; these
    # rows stress the bucketing: all equal, one outlier (everything else in one bucket), a span
    # that overflows float32, subnormal spacing, negative distances. Many exact ties in each.
    rng = np.random.default_rng(6)
    base = rng.integers(0, 5, (6, 40)).astype(np.float32)
    distmat = {
        "constant": np.full((6, 40), 2.5, dtype=np.float32),
        "outlier": base + np.where(np.arange(40) == 3, 1e30, 0).astype(np.float32),
        "huge_span": (base - 2) * np.float32(1.5e38),  # values +-3e38: hi - lo overflows
        "tiny_span": base * np.float32(1e-44),  # subnormal steps: num_buckets / span overflows
        "negative": -base,
    }[kind]
    labels = (rng.integers(0, 4, 6), rng.integers(0, 4, 40), rng.integers(0, 2, 6),
              rng.integers(0, 2, 40))
    ours = evaluate_distmat(torch.from_numpy(distmat), *labels, max_rank=10)
    ref = eval_market1501_reference(distmat, *labels, max_rank=10)
    assert ours.mAP == pytest.approx(ref.mAP, abs=1e-12)
    assert ours.mINP == pytest.approx(ref.mINP, abs=1e-12)
    np.testing.assert_allclose(ours.cmc, ref.cmc, rtol=0, atol=1e-12)


def test_reference_precision_modes_agree() -> None:
    pb = _random_problem(3)
    args = (pb["distmat"].numpy(), pb["q_pids"], pb["g_pids"], pb["q_cams"], pb["g_cams"])
    loop = eval_market1501_reference(*args, precision="loop")
    vec = eval_market1501_reference(*args, precision="numpy")
    assert (loop.mAP, loop.mINP) == (vec.mAP, vec.mINP)


@pytest.mark.parametrize("chunk_size", [1, 7, 29])
def test_chunking_gives_identical_results(chunk_size: int) -> None:
    pb = _random_problem(4, tied=True)
    labels = (pb["q_pids"], pb["g_pids"], pb["q_cams"], pb["g_cams"])
    whole = evaluate_distmat(pb["distmat"], *labels, chunk_size=1000)
    assert evaluate_distmat(pb["distmat"], *labels, chunk_size=chunk_size) == whole
    feats_whole = evaluate_reid(pb["qf"], pb["gf"], *labels, chunk_size=1000)
    assert evaluate_reid(pb["qf"], pb["gf"], *labels, chunk_size=chunk_size) == feats_whole


def test_features_path_equals_distmat_path() -> None:
    pb = _random_problem(5)
    labels = (pb["q_pids"], pb["g_pids"], pb["q_cams"], pb["g_cams"])
    for metric in ("euclidean", "cosine"):
        distmat = compute_distance_matrix(pb["qf"], pb["gf"], metric)
        assert evaluate_reid(pb["qf"], pb["gf"], *labels, metric=metric) == evaluate_distmat(
            distmat, *labels
        )


def test_metrics_as_dict_is_plain() -> None:
    m = ReidMetrics(0.5, 0.25, (1.0,), 1.0, 1.0, 1.0, 3, 0)
    assert m.as_dict()["cmc"] == [1.0]
    assert m.as_dict()["num_valid_queries"] == 3


# --- bad input ------------------------------------------------------------------------------

LABELS_2X3 = ([0, 1], [0, 1, 1], [0, 0], [1, 1, 1])


def test_nan_query_features_rejected() -> None:
    qf, gf = torch.zeros(2, 4), torch.zeros(3, 4)
    qf[1, 2] = float("nan")
    with pytest.raises(ValueError, match="query_feats contains 1 NaN/inf"):
        evaluate_reid(qf, gf, *LABELS_2X3, max_rank=1)


def test_inf_gallery_features_rejected() -> None:
    qf, gf = torch.zeros(2, 4), torch.zeros(3, 4)
    gf[0, 0] = float("inf")
    with pytest.raises(ValueError, match="gallery_feats contains 1 NaN/inf"):
        evaluate_reid(qf, gf, *LABELS_2X3, max_rank=1)


def test_nan_distmat_rejected() -> None:
    distmat = torch.zeros(2, 3)
    distmat[0, 1] = float("nan")
    with pytest.raises(ValueError, match="distmat contains 1 NaN/inf"):
        evaluate_distmat(distmat, *LABELS_2X3, max_rank=1)


def test_mismatched_feature_dims_rejected() -> None:
    with pytest.raises(ValueError, match="query_feats has dim 4 but gallery_feats has dim 5"):
        evaluate_reid(torch.zeros(2, 4), torch.zeros(3, 5), *LABELS_2X3, max_rank=1)


def test_gallery_smaller_than_max_rank_rejected() -> None:
    with pytest.raises(ValueError, match="gallery has 3 items but max_rank=10; lower max_rank"):
        evaluate_distmat(torch.zeros(2, 3), *LABELS_2X3)


@pytest.mark.parametrize(
    ("position", "bad", "message"),
    [
        (0, [0, 1, 2], "query_pids has 3 entries but there are 2 query items"),
        (1, [0, 1], "gallery_pids has 2 entries but there are 3 gallery items"),
        (2, [0], "query_camids has 1 entries but there are 2 query items"),
        (3, [1, 1, 1, 1], "gallery_camids has 4 entries but there are 3 gallery items"),
        (0, [0.0, 1.0], "query_pids must be a 1-D sequence of integers"),
    ],
)
def test_label_length_and_type_mismatch_rejected(position: int, bad: list, message: str) -> None:
    labels = list(LABELS_2X3)
    labels[position] = bad
    with pytest.raises(ValueError, match=message):
        evaluate_distmat(torch.zeros(2, 3), *labels, max_rank=1)


def test_no_valid_query_rejected() -> None:
    # Query identities 7 and 8 never appear in the gallery.
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_distmat(torch.zeros(2, 3), [7, 8], [0, 1, 1], [0, 0], [1, 1, 1], max_rank=1)


def test_scene_ids_must_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="query_sceneids and gallery_sceneids must be given"):
        evaluate_distmat(torch.zeros(2, 3), *LABELS_2X3, query_sceneids=[0, 0], max_rank=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "manhattan"}, "metric must be one of \\['euclidean', 'cosine'\\]"),
        ({"max_rank": 0}, "max_rank must be a positive int but got 0"),
        ({"chunk_size": 0}, "chunk_size must be a positive int but got 0"),
    ],
)
def test_bad_options_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_reid(torch.zeros(2, 4), torch.zeros(3, 4), *LABELS_2X3,
                      **{"max_rank": 1, **kwargs})
