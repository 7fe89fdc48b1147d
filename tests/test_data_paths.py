"""No data path escapes its root: dataset names, AVE/CREMA-D clip ids, symlinks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.loader_trees import ave_line, ave_tree
from tests.test_loaders_manifest import write_manifest
from trainers.data import DataError, create_dataset
from trainers.data.contract import DatasetSpec, ModalitySpec
from trainers.data.loading import path_under

DECL = {"task": "classification", "num_classes": 2,
        "modalities": [{"name": "v", "kind": "vector", "shape": [2]}]}


def _npy_manifest(root: Path, decl: dict, link_outside: Path | None = None) -> Path:
    """6 rows of .npy vectors; with ``link_outside`` row 0's file is a symlink to it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "v").mkdir()
    for i in range(6):
        np.save(root / "v" / f"{i}.npy", np.full(2, i, dtype=np.float32))
    if link_outside is not None:
        (root / "v" / "0.npy").unlink()
        (root / "v" / "0.npy").symlink_to(link_outside)
    write_manifest(root, {"split": ["train", "val", "test"] * 2, "label": [0, 1] * 3,
                          "v_path": [f"v/{i}.npy" for i in range(6)]}, decl=decl)
    return root


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "a\\b", "..", ".hidden", "",
                                  "x y"])
def test_manifest_name_that_is_a_path_is_rejected(tmp_path: Path, name: str) -> None:
    root = _npy_manifest(tmp_path / "set", {**DECL, "name": name})
    with pytest.raises(DataError) as err:
        create_dataset("manifest", root=root)
    msg = str(err.value)
    assert "'name' must be letters, digits" in msg and repr(name) in msg and "\n" not in msg


def test_manifest_default_name_is_the_folder_made_safe(tmp_path: Path) -> None:
    root = _npy_manifest(tmp_path / "my set (v2)", DECL)
    assert create_dataset("manifest", root=root).spec.name == "my_set__v2_"
    ok = _npy_manifest(tmp_path / "other", {**DECL, "name": "lab-set_2.1"})
    assert create_dataset("manifest", root=ok).spec.name == "lab-set_2.1"


def test_spec_name_must_be_one_path_component() -> None:
    mod = (ModalitySpec("v", "vector", (2,)),)
    for bad in ("../x", "/abs", "a/b", "..", "."):
        with pytest.raises(DataError, match="DatasetSpec.name must be letters"):
            DatasetSpec(bad, "classification", mod, 2)
    assert DatasetSpec("ok_name-1.0", "classification", mod, 2).name == "ok_name-1.0"


def test_symlink_inside_the_root_to_a_file_outside_is_rejected(tmp_path: Path) -> None:
    secret = tmp_path / "outside.npy"
    np.save(secret, np.zeros(2, dtype=np.float32))
    root = _npy_manifest(tmp_path / "set", DECL, link_outside=secret)
    with pytest.raises(DataError, match=r"v_path\).*leads to .*outside.npy, outside the "
                                        r"dataset root"):
        create_dataset("manifest", root=root)
    with pytest.raises(DataError, match="outside the dataset root"):
        path_under(root, "v/0.npy", "here")
    # a link that stays inside the root is fine
    (root / "v" / "0.npy").unlink()
    (root / "v" / "0.npy").symlink_to(root / "v" / "1.npy")
    assert path_under(root, "v/0.npy", "here") == root / "v" / "0.npy"
    assert len(create_dataset("manifest", root=root)["train"]) == 2


def test_root_reached_through_a_symlink_still_loads(tmp_path: Path) -> None:
    real = _npy_manifest(tmp_path / "real", DECL)
    (tmp_path / "alias").symlink_to(real)
    assert len(create_dataset("manifest", root=tmp_path / "alias")["test"]) == 2


@pytest.mark.parametrize("video", ["../../outside", "/etc/passwd", "..", "a/b"])
def test_ave_video_id_must_be_a_plain_name(tmp_path: Path, video: str) -> None:
    root = ave_tree(tmp_path / "ave", per_split=1)
    (tmp_path / "outside.npy").write_bytes(b"")  # what ../../outside would reach
    with open(root / "testSet.txt", "a") as f:
        f.write(ave_line("Dog", video) + "\n")
    with pytest.raises(DataError, match=r"testSet.txt:4: clip name .* is not a plain file name"):
        create_dataset("ave", root=root, image_size=(8, 16))


def test_ave_frames_symlinked_outside_the_root_are_rejected(tmp_path: Path) -> None:
    root = ave_tree(tmp_path / "ave", per_split=1)
    frames = root / "Image-01-FPS-SE" / "v000xYz"
    elsewhere = tmp_path / "elsewhere"
    frames.rename(elsewhere)
    frames.symlink_to(elsewhere)
    with pytest.raises(DataError, match="v000xYz leads to .*elsewhere, outside the dataset root"):
        create_dataset("ave", root=root, image_size=(8, 16))


def test_reid_image_symlinked_outside_the_root_is_rejected(tmp_path: Path) -> None:
    from tests.loader_trees import rgbnt201_name, rgbnt201_tree, write_jpg

    root = rgbnt201_tree(tmp_path / "rgbnt201")
    outside = write_jpg(tmp_path / "secret.jpg", 7)
    link = root / "test" / "NI" / rgbnt201_name(50, 1)
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(DataError, match=r"rgbnt201 split 'query': .*leads to .*secret.jpg, "
                                        r"outside the dataset root"):
        create_dataset("rgbnt201", root=root, image_size=(8, 4), val_fraction=0.3)


def test_reid_modality_folder_symlinked_outside_the_root_is_rejected(tmp_path: Path) -> None:
    """Folders are resolved once per scan, files by one lstat: a linked folder still counts."""
    from tests.loader_trees import rgbnt201_tree

    root = rgbnt201_tree(tmp_path / "rgbnt201")
    folder = root / "train_171" / "TI"
    folder.rename(tmp_path / "elsewhere")
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"split 'train': .*TI/.*\.jpg leads to .*elsewhere/.*, "
                                        r"outside the dataset root"):
        create_dataset("rgbnt201", root=root, image_size=(8, 4), val_fraction=0.3)


def test_within_answers_as_a_full_resolve(tmp_path: Path) -> None:
    from trainers.data.loading import Within

    root, out = tmp_path / "root", tmp_path / "out"
    (root / "a").mkdir(parents=True)
    out.mkdir()
    (root / "a" / "f.jpg").write_bytes(b"x")
    (out / "g.jpg").write_bytes(b"x")
    (root / "a" / "link.jpg").symlink_to(out / "g.jpg")
    (root / "a" / "in.jpg").symlink_to(root / "a" / "f.jpg")
    (root / "b").symlink_to(out)
    paths = [root / "a" / "f.jpg", root / "a" / "in.jpg", root / "a" / "missing.jpg",
             root / "a" / "link.jpg", root / "b" / "g.jpg", root / "a" / ".." / "..",
             root / "a" / "..", root]
    within = Within(root)
    for p in paths:
        real = p.resolve()
        expected = real == root.resolve() or root.resolve() in real.parents
        try:
            within(p, "here")
            got = True
        except DataError:
            got = False
        assert got == expected, p
