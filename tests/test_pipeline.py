"""The input pipeline on file-backed data: modalities decoded, workers, order, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_cfg
from tests.loader_trees import (
    ave_tree,
    cremad_tree,
    msvr310_tree,
    rgbnt100_tree,
    rgbnt201_tree,
    write_garbage,
)
from trainers.data import DataError, create_dataset
from trainers.data.contract import iterate_batches
from trainers.data.pipeline import resolve_workers
from trainers.loop import batches, fit
from trainers.strategies import create_strategy

SIZE = (16, 8)


def load(root: Path, **kw: object):
    return create_dataset("rgbnt201", root=root, image_size=SIZE, val_fraction=0.2, **kw)


def corrupt_infrared(root: Path) -> None:
    """After construction: every NI/TI file becomes unreadable (RGB stays good)."""
    for mod in ("NI", "TI"):
        for p in (root / "train_171" / mod).iterdir():
            write_garbage(p)
        for p in (root / "test" / mod).iterdir():
            write_garbage(p)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_unimodal_job_decodes_only_its_modality(tmp_path: Path, workers: int) -> None:
    root = rgbnt201_tree(tmp_path)
    data = load(root, num_workers=workers)
    corrupt_infrared(root)
    train = data["train"]
    got = list(iterate_batches(train, 8, modalities=["rgb"]))
    assert all(set(b["x"]) == {"rgb"} for b in got) and sum(len(b["y"]) for b in got) == 16
    with pytest.raises(DataError, match=r"NI/.*\.jpg: cannot read image") as e:
        list(iterate_batches(train, 8))
    assert "\n" not in str(e.value)  # one line, also from a worker process


def test_unimodal_training_and_evaluation_never_open_other_modalities(tmp_path: Path) -> None:
    root = rgbnt201_tree(tmp_path)
    data = load(root, num_workers=1)
    corrupt_infrared(root)
    s = create_strategy(data.spec, tiny_cfg("unimodal", params={"modality": "rgb"}, epochs=2,
                                            batch_size=8))
    result = fit(s, data)
    assert result.epochs_run == 2 and result.best is not None


def test_workers_make_the_same_batches_as_the_training_thread(tmp_path: Path) -> None:
    root = rgbnt201_tree(tmp_path)
    inline, parallel = load(root, num_workers=0), load(root, num_workers=2)
    assert inline["train"].augment is not None  # the reid default recipe
    for seed in (0, 1):
        a = list(batches(None, inline["train"], 8, seed, train=True))
        b = list(batches(None, parallel["train"], 8, seed, train=True))
        assert len(a) == len(b) > 1
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x["index"], y["index"])
            assert all(torch.equal(x["x"][m], y["x"][m]) for m in ("rgb", "nir", "tir"))
            assert sorted(torch.bincount(x["y"]).tolist())[-2:] == [4, 4]  # P x K, K = 4


def test_workers_persist_across_epochs_and_splits_still_pickle(tmp_path: Path) -> None:
    train = load(rgbnt201_tree(tmp_path), num_workers=1)["train"]
    list(batches(None, train, 8, 0, train=True))
    loader = next(iter(train._feeds.values()))[0]
    pids = [w.pid for w in loader._iterator._workers]
    list(batches(None, train, 8, 1, train=True))
    assert len(train._feeds) == 1 and [w.pid for w in loader._iterator._workers] == pids
    copy = pickle.loads(pickle.dumps(train))
    assert "_feeds" not in copy.__dict__ and torch.equal(copy[0]["x"]["rgb"],
                                                         train[0]["x"]["rgb"])


def test_dropped_data_stops_its_workers_at_once(tmp_path: Path) -> None:
    """No reference cycle keeps a split's worker processes alive: they stop when the data is
    dropped, not when Python's cycle collector runs (which waits 5 s per persistent worker)."""
    import gc

    import psutil

    me = psutil.Process()
    data = load(rgbnt201_tree(tmp_path), num_workers=2)
    before = {c.pid for c in me.children()}
    for epoch in range(2):
        assert sum(len(b["y"]) for b in batches(None, data["train"], 8, epoch, True)) == 32
    workers = [c for c in me.children() if c.pid not in before]
    assert len(workers) == 2
    gc.disable()
    try:
        del data
        gone, alive = psutil.wait_procs(workers, timeout=3)
    finally:
        gc.enable()
    assert not alive, f"workers still running without a garbage collection: {alive}"


def test_worker_count_follows_the_data_and_the_setting(tmp_path: Path, tiny_reid,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_workers(tiny_reid["train"], 10) == 0  # in memory: the fast path
    train = load(rgbnt201_tree(tmp_path))["train"]
    threads = torch.get_num_threads()
    assert resolve_workers(train, 100) == threads
    assert resolve_workers(train, 1) == 1  # never more workers than batches
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_workers(train, 100) == 0  # CPU only: decoded in the training process
    train.num_workers = 3
    assert resolve_workers(train, 1) == 3


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_num_workers_must_be_a_non_negative_int(tmp_path: Path, bad: object) -> None:
    with pytest.raises(DataError, match=f"num_workers must be an int >= 0 .* but got {bad!r}"):
        load(rgbnt201_tree(tmp_path), num_workers=bad)


def test_unknown_modality_for_the_pipeline(tmp_path: Path, tiny_reid) -> None:
    with pytest.raises(DataError, match="has no modality 'depth'"):
        next(iterate_batches(tiny_reid["train"], 4, modalities=["depth"]))


LOADERS = {  # name -> (tree, arguments, the modality a unimodal job reads)
    "rgbnt100": (rgbnt100_tree, {"image_size": (8, 16), "val_fraction": 0.2}, "nir"),
    "msvr310": (msvr310_tree, {"image_size": (8, 16), "val_fraction": 0.2}, "tir"),
    "cremad": (cremad_tree, {"image_size": (8, 8)}, "visual"),
    "ave": (ave_tree, {"image_size": (8, 8)}, "audio"),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_file_loader_through_the_pipeline(tmp_path: Path, name: str) -> None:
    tree, kw, one = LOADERS[name]
    data = create_dataset(name, root=tree(tmp_path), num_workers=1, augment="none", **kw)
    for split in data.splits:
        ds = data[split]
        got = list(iterate_batches(ds, 5, modalities=[one]))
        assert torch.cat([b["index"] for b in got]).tolist() == list(range(len(ds)))
        for b in got:
            assert set(b["x"]) == {one}
            for j, i in enumerate(b["index"].tolist()):
                assert torch.equal(b["x"][one][j], ds[i]["x"][one])


def test_image_batches_cross_processes_as_uint8_and_match_per_sample_floats(
        tmp_path: Path) -> None:
    from trainers.data.pipeline import BatchMaker

    train = load(rgbnt201_tree(tmp_path), num_workers=0, augment="none")["train"]
    raw = BatchMaker(train, ("rgb", "nir"), None)((None, 0, [0, 3]))
    assert raw["raw"] and raw["x"]["rgb"].dtype == torch.uint8  # what a worker sends
    assert raw["x"]["rgb"].shape == (2, 3, *SIZE) and raw["x"]["nir"].shape == (2, 1, *SIZE)
    got = next(iter(iterate_batches(train, 2, batches=[[0, 3]])))
    assert "raw" not in got
    for m in ("rgb", "nir", "tir"):  # normalised per batch = normalised per sample, exactly
        assert got["x"][m].dtype == torch.float32
        assert torch.equal(got["x"][m], torch.stack([train[0]["x"][m], train[3]["x"][m]]))
