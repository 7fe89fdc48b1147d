"""The synthetic re-identification set: splits, determinism, shapes, and a meaningful task."""

from __future__ import annotations

import pytest
import torch

from trainers.data import DataError, TensorDataset, create_dataset


@pytest.fixture(scope="module")
def synth():
    return create_dataset("reid_synth")


def ids(ds) -> set[int]:
    return set(ds.labels.tolist())


def test_splits_are_identity_disjoint(synth) -> None:
    assert synth.spec.task == "reid" and synth.spec.num_classes == 40
    val, query, gallery = ids(synth["val"]), ids(synth["query"]), ids(synth["gallery"])
    assert len(val) == 8 and query == gallery and len(query) == 16
    assert val.isdisjoint(query)
    assert ids(synth["train"]) == set(range(40))  # relabelled 0..C-1
    # train ids are the raw ids neither in val nor in test: 40 + 8 + 16 = all 64
    assert len(val | query) + synth.spec.num_classes == 64
    assert all(isinstance(ds, TensorDataset) for ds in synth.splits.values())
    assert len(synth["train"]) == 40 * 8 and len(synth["val"]) == 8 * 8


def test_shapes_and_modalities() -> None:
    b = create_dataset("reid_synth", image_size=(32, 16), num_ids=12, val_ids=2, test_ids=3,
                       images_per_id=3, num_cameras=2)
    assert b.spec.modality_names == ("rgb", "nir", "tir")
    assert [m.shape for m in b.spec.modalities] == [(3, 32, 16), (1, 32, 16), (1, 32, 16)]
    assert b["query"].tensors["rgb"].shape[1:] == (3, 32, 16)
    assert "seed=0" in b.spec.recipe and b.spec.version == "reid_synth/1"


def test_query_gallery_protocol(synth) -> None:
    q, g = synth["query"], synth["gallery"]
    assert len(q) == 16 * 4  # one query per id and camera (2 images per camera)
    for i in range(len(q)):
        positives = (g.labels == q.labels[i]) & (g.camids != q.camids[i])
        assert positives.any()
    assert set(g.camids.tolist()) == set(range(4))


def test_deterministic_for_a_seed(synth) -> None:
    again = create_dataset("reid_synth")
    other = create_dataset("reid_synth", seed=1)
    for split in synth.splits:
        assert torch.equal(synth[split].tensors["tir"], again[split].tensors["tir"])
        assert torch.equal(synth[split].labels, again[split].labels)
    assert not torch.equal(synth["train"].tensors["rgb"], other["train"].tensors["rgb"])


def test_same_camera_matches_are_easier(synth) -> None:
    """Same identity: images of one camera are closer than images of different cameras."""
    g = synth["val"]  # every image of 8 ids: two per camera
    x = torch.cat([g.tensors[m].flatten(1) for m in ("rgb", "nir", "tir")], dim=1)
    d = torch.cdist(x, x)
    same_id = g.labels[:, None] == g.labels[None, :]
    same_cam = g.camids[:, None] == g.camids[None, :]
    off_diag = ~torch.eye(len(g), dtype=torch.bool)
    assert d[same_id & same_cam & off_diag].mean() < d[same_id & ~same_cam].mean()
    assert d[same_id & ~same_cam].mean() < d[~same_id & ~same_cam].mean()  # identity signal


@pytest.mark.parametrize(("kw", "why"), [
    ({"num_ids": 10, "val_ids": 4, "test_ids": 5}, "at least 2 train ids"),
    ({"images_per_id": 4, "num_cameras": 4}, "images_per_id > num_cameras >= 2"),
    ({"strengths": (1.0, 1.0)}, "strengths must be 3 non-negative values"),
    ({"image_size": (16,)}, "image_size must be"),
])
def test_bad_parameters(kw: dict, why: str) -> None:
    with pytest.raises(DataError, match=why):
        create_dataset("reid_synth", **kw)
