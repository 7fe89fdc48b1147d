"""ReID end to end on the synthetic set: the four strategies train on CPU, UniCat reuses the
unimodal runs, and the table reports mAP and Rank-1 for fused and per-modality embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.conftest import tiny_cfg
from trainers.api import build, evaluate_splits
from trainers.checkpoint import load_checkpoint
from trainers.compare import format_table, plan_and_run, summary_rows
from trainers.data.contract import iterate_batches
from trainers.runs import train_or_reuse

REID_STRATEGIES = ["unimodal", "fusion_concat", "fusion_avg", "unicat"]


def test_all_four_strategies_train_and_report_fused_and_per_modality(tiny_reid, tmp_path):
    results = plan_and_run(tiny_reid, tiny_cfg(), REID_STRATEGIES, [0],
                           lambda d, c: train_or_reuse(d, c, tmp_path))
    labels = [label for label, _ in results]
    assert labels == ["unimodal:rgb", "unimodal:nir", "unimodal:tir", "fusion_concat",
                      "fusion_avg", "unicat"]
    for label, rec in results:
        test = rec.metrics["test"]
        keys = {"fused", *tiny_reid.spec.modality_names} if not label.startswith("unimodal") \
            else {"fused", label.split(":")[1]}
        assert set(test) == keys, label
        for metrics in test.values():
            assert set(metrics) == {"map", "rank1", "rank5", "rank10", "minp"}
            assert all(0.0 <= v <= 1.0 for v in metrics.values())
    unicat = dict(results)["unicat"]
    assert unicat.epochs == 0  # every member reused: nothing trained
    for m in tiny_reid.spec.modality_names:  # per-modality = the reused unimodal run's numbers
        assert unicat.metrics["test"][m] == dict(results)[f"unimodal:{m}"].metrics["test"][m]
    table = format_table(summary_rows(results, metric="map"), ["fused", "rgb", "nir", "tir"])
    assert "unicat" in table and "fusion_avg" in table and "±" in table


def test_unicat_fuses_by_normalised_concatenation(tiny_reid, reid_ckpts):
    s = build(tiny_reid.spec, tiny_cfg("unicat", params={"members": reid_ckpts})).eval()
    x = next(iterate_batches(tiny_reid["query"], 8))["x"]
    with torch.no_grad():
        parts = [load_checkpoint(reid_ckpts[m], tiny_reid.spec).predict(x)["fused"]
                 for m in ("rgb", "nir", "tir")]
        fused = s.predict(x)["fused"]
    assert torch.allclose(fused, F.normalize(torch.cat(parts, 1), dim=1), atol=1e-6)
    assert torch.allclose(fused.norm(dim=1), torch.ones(len(fused)))


def test_single_modality_ensemble_trains_two_independent_backbones(tiny_reid):
    s = build(tiny_reid.spec, tiny_cfg("unicat", params={"modalities": ["rgb", "rgb"]}))
    assert s.keys == ["rgb", "rgb#2"]
    assert [p.name for p in s.phases()] == ["unimodal:rgb", "unimodal:rgb#2"]
    a, b = (dict(s.members[k].named_parameters()) for k in s.keys)
    assert any(not torch.equal(a[n], b[n]) for n in a)  # different initialisations
    from trainers.loop import fit

    fit(s, tiny_reid)
    metrics = evaluate_splits(s, tiny_reid, ["test"])["test"]
    assert set(metrics) == {"fused", "rgb", "rgb#2"}


def test_reid_loss_is_triplet_plus_weighted_id(tiny_reid):
    s = build(tiny_reid.spec, tiny_cfg("fusion_concat", lambda_id=0.5))
    from trainers.loop import batches
    from trainers.reid.losses import soft_margin_triplet_loss

    b = next(batches(s, tiny_reid["train"], 16, epoch_seed=0, train=True))
    out = s.forward_loss(b, s.phases()[0])
    model = s.model(b["x"])
    expected = soft_margin_triplet_loss(model["fused"], b["y"]) + 0.5 * F.cross_entropy(
        model["logits"], b["y"])
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert len(b["y"].unique()) * 4 == len(b["y"])  # P identities x K=4 samples


def test_a_batch_of_more_identities_than_the_train_split_has_is_a_one_line_error(tiny_reid):
    """batch_size 64 = 16 identities x 4 images, but tiny_reid's train split has 8: the error
    names the setting and the largest batch that works, before any training."""
    import pytest

    from trainers.api import train
    from trainers.data.contract import DataError

    with pytest.raises(DataError, match=r"^batch_size 64 makes P x K batches of 16 identities x "
                                        r"4 images, but the train split of reid_synth has only "
                                        r"8 identities; use --batch-size 32 or less$"):
        train(tiny_reid, tiny_cfg(batch_size=64))
