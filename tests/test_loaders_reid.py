"""The reid benchmark loaders on tiny fake trees in the exact on-disk layouts."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tests.loader_trees import (
    msvr310_tree,
    rgbnt100_tree,
    rgbnt201_name,
    rgbnt201_tree,
    write_garbage,
    write_jpg,
    write_tiled,
)
from trainers.data import DataError, create_dataset

SIZE = (8, 16)


def load(name: str, root: Path, **kw: object):
    return create_dataset(name, root=root, image_size=SIZE, val_fraction=0.2, **kw)


def raw_ids(ds) -> list[int]:
    """Raw identities of a split, read back from its file names."""
    return [int(r.files[0].name.split("_")[0]) for r in ds.loader.records]


def grey(value: int) -> float:
    return (value / 255 - 0.449) / 0.226


def test_rgbnt100_ids_cameras_tiles_and_splits(tmp_path: Path) -> None:
    b = load("rgbnt100", rgbnt100_tree(tmp_path))
    assert b.spec.task == "reid" and b.spec.modality_names == ("rgb", "nir", "tir")
    assert [m.shape for m in b.spec.modalities] == [(3, *SIZE), (1, *SIZE), (1, *SIZE)]
    train, val = b["train"], b["val"]
    assert len(val) == 2 * 2 and len(train) == 8 * 2  # 2 of 10 ids carved, 2 images each
    assert set(raw_ids(val)).isdisjoint(raw_ids(train))
    assert set(raw_ids(val)) | set(raw_ids(train)) == set(range(1, 11))
    assert b.spec.num_classes == 8 and set(train.labels.tolist()) == set(range(8))
    ranks = {pid: i for i, pid in enumerate(sorted(set(raw_ids(train))))}
    assert train.labels.tolist() == [ranks[p] for p in raw_ids(train)]
    assert val.labels.tolist() == raw_ids(val)  # val keeps raw ids
    assert set(b["query"].labels.tolist()) == set(b["gallery"].labels.tolist()) == {20, 21, 22}
    assert set(train.camids.tolist()) == {0, 4}  # c001, c005 -> 0-based
    assert (b["query"].sceneids == -1).all()
    x = b["query"][0]["x"]  # tiles of pid 20: grey 20 | 60 | 100
    assert x["nir"].mean().item() == pytest.approx(grey(60), abs=0.05)
    assert x["tir"].mean().item() == pytest.approx(grey(100), abs=0.05)
    assert b.skipped == 0 and "rgbir" in b.spec.recipe and b.spec.version == "rgbnt100/1"


def test_val_carving_is_seeded(tmp_path: Path) -> None:
    root = rgbnt100_tree(tmp_path)
    a, b = load("rgbnt100", root, seed=3), load("rgbnt100", root, seed=3)
    assert raw_ids(a["val"]) == raw_ids(b["val"])
    others = {tuple(sorted(set(raw_ids(load("rgbnt100", root, seed=s)["val"]))))
              for s in range(6)}
    assert len(others) > 1


def test_rgbn300_has_two_tiles(tmp_path: Path) -> None:
    b = load("rgbn300", rgbnt100_tree(tmp_path, tiles=2), ir_channels=3)
    assert b.spec.modality_names == ("rgb", "nir")
    assert b.spec.modality("nir").shape == (3, *SIZE)
    assert b["gallery"][0]["x"]["nir"].shape == (3, *SIZE)


def test_rgbnt201_query_is_gallery_and_cameras(tmp_path: Path) -> None:
    b = load("rgbnt201", rgbnt201_tree(tmp_path))
    assert set(raw_ids(b["train"])) | set(raw_ids(b["val"])) == set(range(1, 11))
    q, g = b["query"], b["gallery"]
    assert len(q) == len(g) == 3 * 2 and q.split == "query" and g.split == "gallery"
    assert q.labels.tolist() == g.labels.tolist() and set(q.labels.tolist()) == {50, 51, 52}
    assert set(b["train"].camids.tolist()) == {0, 2}  # cam1, cam3
    assert [p.parent.name for p in q.loader.records[0].files] == ["RGB", "NI", "TI"]
    assert b.spec.modality("tir").shape == (1, *SIZE)


def test_msvr310_scenes_and_cameras(tmp_path: Path) -> None:
    b = load("msvr310", msvr310_tree(tmp_path))
    assert set(b["train"].sceneids.tolist()) == {7, 9}
    assert set(b["gallery"].camids.tolist()) == {0, 2}
    assert set(b["query"].labels.tolist()) == {30, 31, 32}
    assert [p.parent.name for p in b["query"].loader.records[0].files] == ["vis", "ni", "th"]


# ---- bad input --------------------------------------------------------------------------

def test_missing_modality_folder(tmp_path: Path) -> None:
    root = rgbnt201_tree(tmp_path)
    for f in (root / "train_171" / "TI").iterdir():
        f.unlink()
    (root / "train_171" / "TI").rmdir()
    with pytest.raises(DataError, match=r"train_171/TI is missing"):
        load("rgbnt201", root)


def test_file_without_counterpart(tmp_path: Path) -> None:
    root = rgbnt201_tree(tmp_path)
    name = rgbnt201_name(4, 1)
    (root / "train_171" / "NI" / name).unlink()
    with pytest.raises(DataError, match=rf"RGB/{name}: no counterpart.*NI/{name} is missing"):
        load("rgbnt201", root)
    with pytest.warns(UserWarning, match="1 bad sample"):
        b = load("rgbnt201", root, on_error="skip")
    assert b.skipped == 1 and len(b["train"]) + len(b["val"]) == 10 * 2 - 1


def test_corrupt_image(tmp_path: Path) -> None:
    root = rgbnt100_tree(tmp_path)
    bad = write_garbage(root / "rgbir" / "bounding_box_train" / "0003_c002_xx.jpg")
    with pytest.raises(DataError, match=rf"{bad.name}: cannot read image"):
        load("rgbnt100", root)
    with pytest.warns(UserWarning):
        b = load("rgbnt100", root, on_error="skip")
    assert b.skipped == 1 and len(b["train"]) + len(b["val"]) == 20


def test_corrupt_image_in_gallery_equal_query(tmp_path: Path) -> None:
    root = rgbnt201_tree(tmp_path)
    write_garbage(root / "test" / "NI" / rgbnt201_name(50, 1))
    with pytest.warns(UserWarning):
        b = load("rgbnt201", root, on_error="skip")
    assert b.skipped == 1 and len(b["query"]) == len(b["gallery"]) == 5


@pytest.mark.parametrize(("dataset", "bad_name", "why"), [
    ("rgbnt100", "car12.jpg", "does not start with '<pid>_c<camera>'"),
    ("rgbnt100", "0001_c9_x.jpg", "camera 9 is outside 1..8"),
    ("rgbnt201", "person_cam1_0_00.jpg", "first 6 characters"),
    ("rgbnt201", "000001_c1_0_00.jpg", "no 'camN' token"),
    ("msvr310", "v1.jpg", r"id at \[0:4\], scene at \[6:9\]"),
])
def test_unparseable_names(tmp_path: Path, dataset: str, bad_name: str, why: str) -> None:
    if dataset == "rgbnt100":
        root = rgbnt100_tree(tmp_path)
        write_tiled(root / "rgbir" / "query" / bad_name, (1, 2, 3))
    elif dataset == "rgbnt201":
        root = rgbnt201_tree(tmp_path)
        for mod in ("RGB", "NI", "TI"):
            write_jpg(root / "test" / mod / bad_name, 5)
    else:
        root = msvr310_tree(tmp_path)
        for mod in ("vis", "ni", "th"):
            write_jpg(root / "query3" / "0030" / mod / bad_name, 5)
    with pytest.raises(DataError, match=rf"{bad_name}: cannot parse the file name: .*{why}"):
        load(dataset, root)
    with pytest.warns(UserWarning):
        assert load(dataset, root, on_error="skip").skipped == 1


def test_all_problems_reported_together(tmp_path: Path) -> None:
    root = rgbnt100_tree(tmp_path)
    for name in ("a.jpg", "b.jpg"):
        write_tiled(root / "rgbir" / "bounding_box_train" / name, (1, 2, 3))
    with pytest.raises(DataError, match=r"(?s)split 'train': 2 bad sample\(s\).*a\.jpg.*b\.jpg"):
        load("rgbnt100", root)


def test_empty_split(tmp_path: Path) -> None:
    root = rgbnt100_tree(tmp_path)
    for f in (root / "rgbir" / "query").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="split 'query': no usable samples"):
        load("rgbnt100", root)


def test_all_samples_skipped_is_an_error(tmp_path: Path) -> None:
    root = msvr310_tree(tmp_path)
    for f in (root / "query3").rglob("*.jpg"):
        write_garbage(f)
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"all 6 skipped"):
        load("msvr310", root, on_error="skip")


def test_tiles_must_split_evenly(tmp_path: Path) -> None:
    root = rgbnt100_tree(tmp_path)
    bad = write_jpg(root / "rgbir" / "query" / "0020_c001_odd.jpg", 5, size=(50, 8))
    with pytest.raises(DataError, match=rf"{bad.name}: width 50 px does not split into 3"):
        load("rgbnt100", root)


def test_missing_root_layout_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="rgbir is missing"):
        load("rgbnt100", tmp_path)
    with pytest.raises(DataError, match="on_error must be one of"):
        load("msvr310", tmp_path, on_error="ignore")
    with pytest.raises(DataError, match="val_fraction must be strictly between 0 and 1"):
        create_dataset("rgbnt201", root=tmp_path, val_fraction=0.0)
    with pytest.raises(DataError, match="image_size must be"):
        create_dataset("rgbnt201", root=tmp_path, image_size=(0, 4))


def test_validate_first_reads_one_sample(tmp_path: Path) -> None:
    root = rgbnt100_tree(tmp_path)
    write_garbage(root / "rgbir" / "bounding_box_test" / "0022_c005_zz.jpg")
    b = load("rgbnt100", root, validate="first")  # the corrupt file is last: not read yet
    with pytest.raises(DataError, match="cannot read image"):
        [b["gallery"][i] for i in range(len(b["gallery"]))]
    assert isinstance(b["train"][0]["x"]["rgb"], torch.Tensor)


def test_splits_pickle_for_worker_processes(tmp_path: Path) -> None:
    b = load("msvr310", msvr310_tree(tmp_path))
    copy = pickle.loads(pickle.dumps(b["query"]))
    assert torch.equal(copy[0]["x"]["tir"], b["query"][0]["x"]["tir"])
