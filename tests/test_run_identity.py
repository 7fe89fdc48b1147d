"""A run's name includes the data it was trained on (dataset arguments + fingerprint)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from orchestrator.diagnostics_rows import diagnose_store, stored_runs
from tests.conftest import tiny_cfg
from tests.loader_trees import ave_line, ave_tree
from tests.test_data_paths import DECL, _npy_manifest
from trainers.checkpoint import read_checkpoint
from trainers.data import create_dataset
from trainers.data.contract import DataBundle, TensorDataset
from trainers.runs import run_name, train_or_reuse

SMALL = {"n": 60, "dim": 4, "num_classes": 2}


def _name(**kw: object) -> str:
    return run_name(create_dataset("synthetic_unimodal", **{**SMALL, **kw}).spec, tiny_cfg())


def test_other_dataset_arguments_get_another_run_name() -> None:
    a, b = _name(noise=0.1, seed=0), _name(noise=3.0, seed=7)
    assert a != b
    assert a == _name(noise=0.1, seed=0)  # the same arguments twice: the same name
    assert _name() == a  # noise=0.1 and seed=0 are the defaults
    assert _name(noise=1) == _name(noise=1.0)
    assert _name(split=[0.6, 0.2, 0.2]) == a  # a list from the command line == the tuple
    assert _name(noise=0.1, seed=1) != a


def test_a_run_on_other_data_is_not_reused(tmp_path: Path) -> None:
    clean = create_dataset("synthetic_unimodal", **SMALL, noise=0.1, seed=0)
    noisy = create_dataset("synthetic_unimodal", **SMALL, noise=3.0, seed=7)
    cfg = tiny_cfg("fusion_concat", epochs=1)
    first = train_or_reuse(clean, cfg, tmp_path)
    second = train_or_reuse(noisy, cfg, tmp_path)
    assert not second.reused and second.location != first.location
    assert train_or_reuse(clean, cfg, tmp_path).reused
    meta = read_checkpoint(second.checkpoint)
    assert meta["data_identity"] == noisy.spec.identity
    assert json.loads(meta["data_identity"])["args"]["noise"] == 3


def test_identity_holds_arguments_and_fingerprint() -> None:
    data = create_dataset("synthetic_unimodal", **SMALL)
    ident = json.loads(data.spec.identity)
    assert ident["dataset"] == "synthetic_unimodal"
    assert ident["args"]["seed"] == 0 and ident["args"]["n"] == 60
    assert ident["fingerprint"] == data.spec.fingerprint and len(data.spec.fingerprint) == 16


def test_hand_built_bundle_is_fingerprinted_by_its_arrays() -> None:
    data = create_dataset("synthetic_unimodal", **SMALL)

    def rebuilt(shift: float) -> DataBundle:
        spec = data.spec.__class__(data.spec.name, "classification", data.spec.modalities,
                                   data.spec.num_classes)
        return DataBundle(spec, {s: TensorDataset(spec, s, {m: t + shift for m, t in
                                                            data[s].tensors.items()},
                                                  data[s].labels)
                                 for s in spec.split_names})

    same, moved = rebuilt(0.0), rebuilt(1e-3)
    assert same.spec.fingerprint and same.spec.fingerprint == rebuilt(0.0).spec.fingerprint
    assert moved.spec.fingerprint != same.spec.fingerprint
    assert run_name(moved.spec, tiny_cfg()) != run_name(same.spec, tiny_cfg())


def test_a_bundle_of_other_splits_never_keeps_the_old_fingerprint() -> None:
    data = create_dataset("synthetic_unimodal", **SMALL)
    part = DataBundle(data.spec, {s: TensorDataset(data.spec, s, {m: t[:8] for m, t in
                                                                  data[s].tensors.items()},
                                                   data[s].labels[:8])
                                  for s in data.spec.split_names})
    assert part.spec.fingerprint != data.spec.fingerprint
    assert run_name(part.spec, tiny_cfg()) != run_name(data.spec, tiny_cfg())


def _manifest_identity(root: Path) -> str:
    return create_dataset("manifest", root=root).spec.identity


def test_manifest_identity_follows_the_files_not_the_folder(tmp_path: Path) -> None:
    root = _npy_manifest(tmp_path / "a", {**DECL, "name": "toy"})
    ident = _manifest_identity(root)
    assert "root" not in json.loads(ident)["args"]
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(root, moved)
    assert _manifest_identity(moved) == ident  # a moved dataset keeps its runs
    np.save(moved / "v" / "3.npy", np.full(3, 3, dtype=np.float64)[:2])  # other size
    assert _manifest_identity(moved) != ident
    shutil.rmtree(moved)
    shutil.copytree(root, moved)
    decl = {**DECL, "name": "toy",
            "modalities": [{"name": "v", "kind": "vector", "shape": [2]}], "version": "2"}
    (moved / "dataset.json").write_text(json.dumps(decl))  # the declaration is a source too
    with pytest.raises(Exception, match="declare different datasets"):
        _manifest_identity(moved)


def test_ave_identity_follows_the_split_lists(tmp_path: Path) -> None:
    root = ave_tree(tmp_path / "ave", per_split=1)
    ident = create_dataset("ave", root=root, image_size=(8, 16)).spec.identity
    shutil.copytree(root, tmp_path / "copy")
    assert create_dataset("ave", root=tmp_path / "copy", image_size=(8, 16)).spec.identity \
        == ident
    with open(root / "Annotations.txt", "a") as f:
        f.write(ave_line("Dog", "v999xYz") + "\n")  # same classes, other file content
    assert create_dataset("ave", root=root, image_size=(8, 16)).spec.identity != ident
    assert create_dataset("ave", root=tmp_path / "copy", image_size=[8, 16],
                          validate="first").spec.identity == ident


def test_diagnose_matches_runs_by_data_identity(tmp_path: Path) -> None:
    clean = create_dataset("synthetic_unimodal", **SMALL, noise=0.1, seed=0)
    noisy = create_dataset("synthetic_unimodal", **SMALL, noise=3.0, seed=7)
    run = train_or_reuse(clean, tiny_cfg("unimodal", epochs=1, params={"modality": "m1"}),
                         tmp_path / "runs")
    assert [r.name for r in stored_runs(tmp_path / "runs", clean.spec)] == [run.name]
    assert stored_runs(tmp_path / "runs", noisy.spec) == []
    with pytest.raises(FileNotFoundError, match=r"1 run\(s\) of 'synthetic_unimodal' there "
                                                r"were trained on other data"):
        diagnose_store(noisy, tmp_path / "runs", tmp_path / "results")
