"""The bring-your-own Parquet manifest: formats, declarations and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.loader_trees import write_garbage, write_jpg
from trainers.data import DataError, TensorDataset, create_dataset

CLS = {"name": "toy", "task": "classification", "class_names": ["a", "b", "c"],
       "modalities": [{"name": "rgb", "kind": "image", "shape": [3, 4, 6]},
                      {"name": "feat", "kind": "vector", "shape": [4]},
                      {"name": "seq", "kind": "sequence", "shape": [2, 3]}],
       "recipe": "toy files", "version": "7"}
SPLITS = ["train"] * 6 + ["val"] * 3 + ["test"] * 3


def write_manifest(root: Path, columns: dict[str, list], decl: dict | None = CLS,
                   name: str = "manifest.parquet") -> Path:
    table = pa.table(columns)
    if decl is not None:
        table = table.replace_schema_metadata({"dataset": json.dumps(decl)})
    pq.write_table(table, root / name)
    return root / name


def classification_tree(root: Path) -> dict[str, list]:
    """12 rows: rgb from .jpg files, feat from .npy files, seq inline, an extra column."""
    cols: dict[str, list] = {"split": list(SPLITS), "label": [i % 3 for i in range(12)],
                             "rgb_path": [], "feat_path": [], "seq": [], "note": ["x"] * 12}
    (root / "feat").mkdir()
    for i in range(12):
        write_jpg(root / "img" / f"{i}.jpg", 20 * i, size=(12, 8))
        np.save(root / "feat" / f"{i}.npy", np.full(4, i, dtype=np.float32))
        cols["rgb_path"].append(f"img/{i}.jpg")
        cols["feat_path"].append(f"feat/{i}.npy")
        cols["seq"].append([float(i)] * 6)
    return cols


def test_classification_manifest_files_and_inline(tmp_path: Path) -> None:
    write_manifest(tmp_path, classification_tree(tmp_path))
    b = create_dataset("manifest", root=tmp_path)
    assert b.spec.name == "toy" and b.spec.class_names == ("a", "b", "c")
    assert b.spec.recipe == "toy files" and b.spec.version == "7"
    assert {s: len(b[s]) for s in ("train", "val", "test")} == {"train": 6, "val": 3, "test": 3}
    item = b["val"][1]  # row 7
    assert item["y"] == 7 % 3 and item["camid"] == -1
    assert torch.equal(item["x"]["feat"], torch.full((4,), 7.0))
    assert torch.equal(item["x"]["seq"], torch.full((2, 3), 7.0))
    assert item["x"]["rgb"].shape == (3, 4, 6)  # resized to the declared (H, W)
    r = item["x"]["rgb"][0].mean().item() * 0.229 + 0.485
    assert r == pytest.approx(140 / 255, abs=0.02)


def test_all_inline_is_in_memory_and_sidecar_declaration(tmp_path: Path) -> None:
    decl = {"task": "classification", "num_classes": 2,
            "modalities": [{"name": "v", "kind": "vector", "shape": [3]}]}
    (tmp_path / "dataset.json").write_text(json.dumps(decl))
    write_manifest(tmp_path, {"split": ["train", "val", "test"] * 2, "label": [0, 1] * 3,
                              "v": [[float(i)] * 3 for i in range(6)]}, decl=None)
    b = create_dataset("manifest", root=tmp_path)
    assert isinstance(b["train"], TensorDataset) and b.spec.name == tmp_path.name
    assert b["test"].tensors["v"].tolist() == [[2.0] * 3, [5.0] * 3]


def test_reid_manifest_relabels_train_and_keeps_ids(tmp_path: Path) -> None:
    decl = {"task": "reid", "modalities": [{"name": "nir", "kind": "image", "shape": [1, 4, 4],
                                            "mean": [0.5], "std": [0.25]}]}
    splits, labels, cams, paths = [], [], [], []
    for i, (split, pid) in enumerate([("train", 17), ("train", 17), ("train", 5), ("train", 9),
                                      ("val", 40), ("query", 70), ("gallery", 70),
                                      ("gallery", 71)]):
        write_jpg(tmp_path / "nir" / f"{i}.png", 64, size=(4, 4), mode="L")
        splits.append(split), labels.append(pid), cams.append(i % 2)
        paths.append(f"./nir/{i}.png")
    write_manifest(tmp_path, {"split": splits, "label": labels, "camid": cams,
                              "sceneid": [3] * 7 + [None], "nir_path": paths}, decl=decl)
    b = create_dataset("manifest", root=tmp_path)
    assert b.spec.task == "reid" and b.spec.num_classes == 3
    assert b["train"].labels.tolist() == [2, 2, 0, 1]
    assert b["gallery"].labels.tolist() == [70, 71] and b["val"].labels.tolist() == [40]
    assert b["query"].camids.tolist() == [1] and b["gallery"].sceneids.tolist() == [3, -1]
    x = b["query"][0]["x"]["nir"]
    assert x.mean().item() == pytest.approx((64 / 255 - 0.5) / 0.25, abs=0.02)


# ---- bad input --------------------------------------------------------------------------

def test_missing_columns(tmp_path: Path) -> None:
    cols = classification_tree(tmp_path)
    del cols["label"], cols["feat_path"]
    write_manifest(tmp_path, cols)
    missing = r"missing column\(s\) \['label', 'feat_path \(or feat\)'\]; the table has"
    with pytest.raises(DataError, match=missing):
        create_dataset("manifest", root=tmp_path)


@pytest.mark.parametrize("bad", ["../outside.npy", "/etc/passwd", "feat/../../x.npy"])
def test_paths_escaping_the_root(tmp_path: Path, bad: str) -> None:
    cols = classification_tree(tmp_path)
    cols["feat_path"][3] = bad
    write_manifest(tmp_path, cols)
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=rf"row 3 \(feat_path\): path '{bad}' is not inside"):
            create_dataset("manifest", root=tmp_path, on_error=on_error)


def test_row_problems_are_named_and_skippable(tmp_path: Path) -> None:
    cols = classification_tree(tmp_path)
    cols["feat_path"][0] = "feat/missing.npy"
    cols["label"][1] = 3
    cols["split"][6] = "training"
    cols["seq"][9] = [1.0, 2.0]
    write_garbage(tmp_path / "img" / "2.jpg")
    np.save(tmp_path / "feat" / "7.npy", np.zeros(5, dtype=np.float32))
    write_manifest(tmp_path, cols)
    with pytest.raises(DataError) as err:
        create_dataset("manifest", root=tmp_path)
    msg = str(err.value)
    assert "row 0: feat_path file" in msg and "missing.npy does not exist" in msg
    assert "row 1: label 3 is outside [0, 3)" in msg
    assert "row 6: split 'training' is not one of ['train', 'val', 'test']" in msg
    assert "row 9: column 'seq' has 2 values, expected 6 for shape (2, 3)" in msg
    with pytest.warns(UserWarning, match="6 bad sample"):
        b = create_dataset("manifest", root=tmp_path, on_error="skip")
    assert b.skipped == 6 and [len(b[s]) for s in ("train", "val", "test")] == [3, 1, 2]
    with pytest.raises(DataError, match="no usable rows with split 'train'"):
        cols["split"] = ["val"] * 6 + SPLITS[6:]
        write_manifest(tmp_path, cols)
        with pytest.warns(UserWarning):
            create_dataset("manifest", root=tmp_path, on_error="skip")


def test_file_content_errors_name_the_file(tmp_path: Path) -> None:
    cols = classification_tree(tmp_path)
    np.save(tmp_path / "feat" / "6.npy", np.zeros((2, 2), dtype=np.float32))
    write_manifest(tmp_path, cols)
    with pytest.raises(DataError, match=r"6\.npy: array has shape \(2, 2\), modality 'feat'"):
        create_dataset("manifest", root=tmp_path)
    write_garbage(tmp_path / "img" / "7.jpg")
    np.save(tmp_path / "feat" / "6.npy", np.zeros(4, dtype=np.float32))
    with pytest.raises(DataError, match=r"7\.jpg: cannot read image"):
        create_dataset("manifest", root=tmp_path)


@pytest.mark.parametrize(("change", "why"), [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"task": "regression"}, "task must be one of"),
    ({"class_names": [], "num_classes": 1}, "needs 'class_names' or 'num_classes' >= 2"),
    ({"modalities": [{"name": "rgb", "kind": "image"}]}, "needs 'name', 'kind' and 'shape'"),
    ({"modalities": [{"name": "feat", "kind": "vector", "shape": [4], "mean": [0.1]}]},
     "'mean'/'std' only apply to image"),
])
def test_bad_declarations(tmp_path: Path, change: dict, why: str) -> None:
    write_manifest(tmp_path, classification_tree(tmp_path), decl={**CLS, **change})
    with pytest.raises(DataError, match=why):
        create_dataset("manifest", root=tmp_path)


def test_declaration_sources_and_columns(tmp_path: Path) -> None:
    cols = classification_tree(tmp_path)
    write_manifest(tmp_path, cols, decl=None)
    with pytest.raises(DataError, match="no dataset declaration"):
        create_dataset("manifest", root=tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({**CLS, "version": "8"}))
    write_manifest(tmp_path, cols)
    with pytest.raises(DataError, match="declare different datasets"):
        create_dataset("manifest", root=tmp_path)
    (tmp_path / "dataset.json").unlink()
    write_manifest(tmp_path, {**cols, "depth_path": cols["feat_path"]})
    with pytest.raises(DataError, match="column 'depth_path' names a modality that is not"):
        create_dataset("manifest", root=tmp_path)
    write_manifest(tmp_path, {**cols, "feat": cols["seq"]})
    with pytest.raises(DataError, match="has both columns 'feat' and 'feat_path'"):
        create_dataset("manifest", root=tmp_path)
    with pytest.raises(DataError, match="other.parquet does not exist"):
        create_dataset("manifest", root=tmp_path, table="other.parquet")


def test_reid_splits_must_not_share_identities(tmp_path: Path) -> None:
    decl = {"task": "reid", "modalities": [{"name": "v", "kind": "vector", "shape": [2]}]}
    rows = [("train", 1), ("train", 2), ("val", 3), ("query", 2), ("gallery", 2)]
    write_manifest(tmp_path, {"split": [s for s, _ in rows], "label": [p for _, p in rows],
                              "v": [[0.0, 1.0]] * len(rows)}, decl=decl)
    with pytest.raises(DataError, match="identity 2 is in split 'train' and in query/gallery"):
        create_dataset("manifest", root=tmp_path)


def test_labels_must_be_integers(tmp_path: Path) -> None:
    cols = classification_tree(tmp_path)
    cols["label"] = [float(y) for y in cols["label"]]
    cols["label"][4] = 1.5
    write_manifest(tmp_path, cols)
    with pytest.raises(DataError, match=r"row 4: label 1.5 is not an integer"):
        create_dataset("manifest", root=tmp_path)
