"""ReID losses, BNNeck and P x K sampling: hand-computed values and contracts."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainers.reid import (
    BNNeck,
    ReidCriterion,
    pairwise_euclidean,
    pk_batches,
    soft_margin_triplet_loss,
)

# Four points on a 3-4-5 rectangle: d(0,1)=3, d(0,2)=4, d(0,3)=5, d(1,2)=5, d(1,3)=4, d(2,3)=3
EMB = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0]])
PIDS = torch.tensor([0, 0, 0, 1])


def test_pairwise_euclidean_values() -> None:
    expected = torch.tensor(
        [[0.0, 3.0, 4.0, 5.0], [3.0, 0.0, 5.0, 4.0], [4.0, 5.0, 0.0, 3.0], [5.0, 4.0, 3.0, 0.0]]
    )
    # the diagonal is sqrt(clamp(0, 1e-12)) = 1e-6, not 0: that is the clamp at work
    torch.testing.assert_close(pairwise_euclidean(EMB), expected, atol=1e-6, rtol=0)


def test_triplet_loss_hand_computed() -> None:
    # anchor 0: positives {1: 3, 2: 4} -> d_ap 4; negative {3: 5} -> d_an 5 -> softplus(-1)
    # anchor 1: positives {0: 3, 2: 5} -> d_ap 5; negative {3: 4} -> d_an 4 -> softplus(1)
    # anchor 2: positives {0: 4, 1: 5} -> d_ap 5; negative {3: 3} -> d_an 3 -> softplus(2)
    # anchor 3: no positive -> left out
    # loss = (log(1+e^-1) + log(1+e^1) + log(1+e^2)) / 3
    #      = (0.3132617 + 1.3132617 + 2.1269280) / 3 = 1.2511505
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1)) + math.log1p(math.exp(2))) / 3
    loss = soft_margin_triplet_loss(EMB, PIDS)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(1.2511504620264728, abs=1e-12)


def test_triplet_gradients_finite_for_duplicate_embeddings() -> None:
    emb = torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 0.0], [2.0, 0.0]], requires_grad=True)
    loss = soft_margin_triplet_loss(emb, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()


def test_triplet_large_gap_does_not_overflow() -> None:
    emb = torch.tensor([[0.0], [1000.0], [1.0], [1001.0]])  # d_ap 1000 vs d_an 1
    loss = soft_margin_triplet_loss(emb, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(999.0, abs=1e-3)  # softplus(999) = 999 + tiny


@pytest.mark.parametrize("pids", [[0, 1, 2, 3], [5, 5, 5, 5]])
def test_triplet_without_valid_anchor_rejected(pids: list[int]) -> None:
    with pytest.raises(ValueError, match="no anchor has both a positive and a negative"):
        soft_margin_triplet_loss(EMB, torch.tensor(pids))


def test_triplet_bad_shapes_rejected() -> None:
    with pytest.raises(ValueError, match="pids must be 1-D with one id per row of emb \\(4\\)"):
        soft_margin_triplet_loss(EMB, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="emb must be 2-D"):
        soft_margin_triplet_loss(torch.zeros(4), PIDS)


def test_bnneck_bias_frozen_and_classifier_bias_free() -> None:
    torch.manual_seed(0)
    neck = BNNeck(dim=6, num_classes=3)
    assert neck.classifier.bias is None
    assert not neck.bn.bias.requires_grad
    assert torch.equal(neck.bn.bias, torch.zeros(6))
    feats, logits = neck(torch.randn(8, 6))
    assert feats.shape == (8, 6) and logits.shape == (8, 3)
    F.cross_entropy(logits, torch.arange(8) % 3).backward()
    assert neck.bn.bias.grad is None
    assert neck.bn.weight.grad is not None and neck.classifier.weight.grad is not None
    trainable = {name for name, p in neck.named_parameters() if p.requires_grad}
    assert trainable == {"bn.weight", "classifier.weight"}


@pytest.mark.parametrize(("kwargs", "field"), [({"dim": 0, "num_classes": 3}, "dim"),
                                               ({"dim": 4, "num_classes": 0}, "num_classes")])
def test_bnneck_bad_sizes_rejected(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"BNNeck.{field} must be a positive int but got 0"):
        BNNeck(**kwargs)


def test_criterion_sums_triplet_and_weighted_id() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
    out = ReidCriterion(lambda_id=0.5)(EMB, logits, torch.tensor([0, 0, 0, 1]))
    ce = F.cross_entropy(logits, torch.tensor([0, 0, 0, 1]))
    torch.testing.assert_close(out["triplet"], soft_margin_triplet_loss(EMB, PIDS))
    torch.testing.assert_close(out["id"], ce)
    torch.testing.assert_close(out["loss"], out["triplet"] + 0.5 * ce)
    only_triplet = ReidCriterion(lambda_id=0.0)(EMB, logits, PIDS)
    torch.testing.assert_close(only_triplet["loss"], only_triplet["triplet"])


def test_criterion_negative_lambda_rejected() -> None:
    with pytest.raises(ValueError, match="lambda_id cannot be negative but got -1"):
        ReidCriterion(lambda_id=-1)
    for bad in (float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="lambda_id must be a finite number"):
            ReidCriterion(lambda_id=bad)


def test_numpy_integers_accepted() -> None:
    labels = np.array(LABELS)
    assert pk_batches(labels, p=np.int64(2), k=np.int64(2), seed=np.int64(3), epoch=0)
    assert BNNeck(np.int64(4), np.int64(2)).classifier.out_features == 2


def test_criterion_logits_shape_checked() -> None:
    with pytest.raises(ValueError, match="logits must be \\(N, num_classes\\)"):
        ReidCriterion()(EMB, torch.zeros(3, 2), PIDS)


# --- P x K sampling -------------------------------------------------------------------------

# identity -> number of images: 1 image (needs replacement), 3, 4, 9 and 12 images
SIZES = {10: 1, 11: 3, 12: 4, 13: 9, 14: 12}
LABELS = [pid for pid, n in SIZES.items() for _ in range(n)]


def test_pk_batches_have_p_identities_times_k_samples() -> None:
    batches = pk_batches(LABELS, p=3, k=4, seed=1, epoch=0)
    assert batches
    for batch in batches:
        assert len(batch) == 12
        counts = Counter(LABELS[i] for i in batch)
        assert len(counts) == 3 and set(counts.values()) == {4}
    for batch in batches:
        assert all(LABELS[i] == LABELS[batch[j - j % 4]] for j, i in enumerate(batch))


def test_pk_small_identity_sampled_with_replacement() -> None:
    # p = all 5 identities: the single batch must include identity 10 and its only image,
    # repeated K = 4 times; identity 14 (12 images) gives 4 distinct images.
    (batch,) = pk_batches(LABELS, p=5, k=4, seed=0, epoch=0)
    assert batch.count(LABELS.index(10)) == 4
    assert len({i for i in batch if LABELS[i] == 14}) == 4


def test_pk_batches_deterministic_per_seed_and_epoch() -> None:
    first = pk_batches(LABELS, p=2, k=2, seed=7, epoch=3)
    assert pk_batches(torch.tensor(LABELS), p=2, k=2, seed=7, epoch=3) == first
    others = [pk_batches(LABELS, p=2, k=2, seed=7, epoch=e) for e in range(3)]
    assert any(o != first for o in others)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 2, "k": 1}, "k must be an int >= 2"),
        ({"p": 1, "k": 4}, "p must be an int >= 2"),
        ({"p": 6, "k": 4}, "p=6 identities per batch but the data has only 5; lower p"),
        ({"p": 2, "k": 4, "epoch": -1}, "epoch must be a non-negative int but got -1"),
    ],
)
def test_pk_batches_bad_arguments_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pk_batches(LABELS, **kwargs)
