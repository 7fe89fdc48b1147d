"""The preprocessing cache next to the run store: its default place, and on object storage
(a real S3 API on 127.0.0.1) built once, uploaded whole, fetched once per node, never used
half-uploaded or from other data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

import trainers.data.reid_benchmarks as reid
import trainers.data.remote_cache as remote
import trainers.locks as locks
from tests.conftest import make_bucket
from tests.loader_trees import rgbnt201_name, rgbnt201_tree, write_jpg
from tests.test_cache import all_x, load, no_decoding
from trainers.data import create_dataset, with_cache_default
from trainers.data.cache import CachedDataset, default_cache_dir
from trainers.storage import Storage


@pytest.fixture(autouse=True)
def quick_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """One job per test: no lease race to settle (tests/test_cache_lock.py races two)."""
    monkeypatch.setattr(locks, "SETTLE_S", 0.05)


def test_the_default_cache_is_data_cache_under_the_storage_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    assert default_cache_dir(root) == str(root / "data-cache")
    kw = with_cache_default("rgbnt201", {"root": "x"}, root)
    assert kw == {"root": "x", "cache_dir": str(root / "data-cache")}
    assert with_cache_default("rgbnt201", {"cache_dir": None}, root) == {"cache_dir": None}
    assert with_cache_default("synthetic_both", {}, root) == {}  # in memory: no cache
    assert with_cache_default("cremad", {}, Storage.open(root))["cache_dir"].endswith("data-cache")


def remote_split(store: Storage, split: str) -> str:
    return next(f.base_name for f in store.list() if f.base_name.startswith(f"rgbnt201-{split}"))


def builds(store: Storage, name: str) -> list[str]:
    return [f.base_name for f in store.list(name) if f.type == pafs.FileType.Directory]


def test_a_cache_on_s3_is_built_once_and_fetched_once_per_node(
        s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = rgbnt201_tree(tmp_path / "data")
    uri = default_cache_dir(make_bucket(s3_server, "cache-once") + "/study")
    assert uri == "s3://cache-once/study/data-cache"
    monkeypatch.setenv("FUSION_CACHE_DIR", str(tmp_path / "node-a"))
    first = load(root, uri)
    store = Storage.open(uri)
    train = remote_split(store, "train")
    meta = json.loads(store.read_text(train, "meta.json"))
    assert builds(store, train) == [meta["data"]]
    assert meta["data"].startswith(meta["fingerprint"][:16])
    want = {s: all_x(first[s]) for s in ("train", "query")}

    no_decoding(monkeypatch)  # every later job, on any node, decodes nothing
    monkeypatch.setenv("FUSION_CACHE_DIR", str(tmp_path / "node-b"))
    fetched = load(root, uri)
    assert isinstance(fetched["train"], CachedDataset)
    assert str(fetched["train"].folder).startswith(str(tmp_path / "node-b"))
    for split, x in want.items():
        got = all_x(fetched[split])
        assert all(torch.equal(got[m], x[m]) for m in x)

    def no_download(*a: object, **k: object) -> None:
        raise AssertionError("a node fetches a build once")

    monkeypatch.setattr(remote.pafs, "copy_files", no_download)
    again = load(root, uri)
    assert again["train"].folder == fetched["train"].folder


def test_half_uploaded_or_other_data_on_s3_is_rebuilt_never_used(
        s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = rgbnt201_tree(tmp_path / "data")
    uri = make_bucket(s3_server, "cache-rebuild") + "/data-cache"
    monkeypatch.setenv("FUSION_CACHE_DIR", str(tmp_path / "node-a"))
    load(root, uri)
    store = Storage.open(uri)
    train = remote_split(store, "train")
    store.delete(train, "meta.json")  # arrays uploaded, pointer never written: a killed upload
    calls: list[int] = []
    real = reid.read_image
    monkeypatch.setattr(reid, "read_image", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("FUSION_CACHE_DIR", str(tmp_path / "node-b"))
    load(root, uri)
    assert calls  # decoded again, not taken from the unpointed build
    assert len(builds(store, train)) == 2  # same data: the other build is left alone

    for mod in ("RGB", "NI", "TI"):  # other data under the same names
        write_jpg(root / "train_171" / mod / rgbnt201_name(1, 1), 200)
    monkeypatch.setenv("FUSION_CACHE_DIR", str(tmp_path / "node-c"))
    changed = load(root, uri)
    meta = json.loads(store.read_text(train, "meta.json"))
    assert builds(store, train) == [meta["data"]]  # builds of the old data deleted
    want = all_x(load(root, None)["train"])
    assert torch.equal(all_x(changed["train"])["rgb"], want["rgb"])


def test_a_sweep_setup_points_the_dataset_at_the_storage_cache(tmp_path: Path) -> None:
    root = rgbnt201_tree(tmp_path / "data")
    kw = with_cache_default("rgbnt201", {"root": str(root), "image_size": [16, 8],
                                         "val_fraction": 0.2}, tmp_path / "store")
    create_dataset("rgbnt201", **kw)
    assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "store" / "data-cache").iterdir()) \
        == ["rgbnt201-query", "rgbnt201-train"]


def test_python_m_trainers_caches_file_datasets_under_its_storage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainers.__main__ import main

    argv = ["--dataset", "rgbnt201", "--dataset-arg", f"root={rgbnt201_tree(tmp_path / 'data')}",
            "--dataset-arg", "image_size=[16,8]", "--dataset-arg", "val_fraction=0.2",
            "--strategies", "fusion_concat", "--epochs", "1", "--batch-size", "8", "-q"]
    assert main([*argv, "--storage", str(tmp_path / "store")]) == 0
    cache = tmp_path / "store" / "data-cache"
    assert sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir()) \
        == ["rgbnt201-query", "rgbnt201-train"]
    calls: list[int] = []
    real = reid.read_image
    monkeypatch.setattr(reid, "read_image", lambda *a: calls.append(1) or real(*a))
    assert main([*argv, "--storage", str(tmp_path / "store"), "--seeds", "1"]) == 0
    assert calls == []  # the second run read the cache
    off = ["--storage", str(tmp_path / "off"), "--dataset-arg", "cache_dir=null"]
    assert main([*argv, *off]) == 0
    assert len(calls) > 78  # each of the 78 files (13 ids x 2 cameras x 3), again every pass
    assert not (tmp_path / "off" / "data-cache").exists()


def test_python_m_orchestrator_diagnose_caches_under_its_storage_too(tmp_path: Path,
                                                                     capsys) -> None:
    """diagnose / recommend build the dataset with the same cache default as every command:
    here the storage holds no run store yet (a one-line error), but the cache is built."""
    from orchestrator.__main__ import main

    argv = ["diagnose", "--dataset", "rgbnt201", "--dataset-arg",
            f"root={rgbnt201_tree(tmp_path / 'data')}", "--dataset-arg", "image_size=[16,8]",
            "--dataset-arg", "val_fraction=0.2", "--storage", str(tmp_path / "store")]
    assert main(argv) == 2
    assert capsys.readouterr().err.endswith("does not exist; train runs into it first (python -m "
                                            "trainers --storage ROOT, with the same ROOT)\n")
    assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "store" / "data-cache").iterdir()
                  ) == ["rgbnt201-query", "rgbnt201-train"]
