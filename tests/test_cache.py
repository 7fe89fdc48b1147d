"""The preprocessing cache: built once, reused without decoding, rebuilt for other data,
never used half-built, bad files named at build and honoured on every hit."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import trainers.data.av_benchmarks as av
import trainers.data.reid_benchmarks as reid
from tests.loader_trees import cremad_tree, rgbnt201_name, rgbnt201_tree, write_garbage, write_jpg
from trainers.data import DataError, create_dataset
from trainers.data.cache import CachedDataset
from trainers.data.contract import iterate_batches

SIZE = (16, 8)


def load(root: Path, cache: Path | None, **kw: object):
    return create_dataset("rgbnt201", root=root, image_size=SIZE, val_fraction=0.2,
                          cache_dir=cache, **kw)


def all_x(ds, modalities=None) -> dict[str, torch.Tensor]:
    got = list(iterate_batches(ds, 64, modalities=modalities))
    return {m: torch.cat([b["x"][m] for b in got]) for m in got[0]["x"]}


def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("a cache hit must not decode")

    monkeypatch.setattr(reid, "read_image", refuse)
    monkeypatch.setattr(av, "read_frames", refuse)


def folders(cache: Path) -> list[str]:
    return sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir())


def test_cached_splits_equal_decoded_ones_and_a_hit_decodes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = rgbnt201_tree(tmp_path / "data"), tmp_path / "cache"
    plain = load(root, None)
    first = load(root, cache)
    assert folders(cache) == ["rgbnt201-query", "rgbnt201-train"]  # val/gallery reuse them
    splits = ("train", "val", "query", "gallery")
    decoded = {s: all_x(plain[s]) for s in splits}
    no_decoding(monkeypatch)
    hit = load(root, cache)
    for split in splits:
        assert isinstance(hit[split], CachedDataset)
        assert hit[split].labels.tolist() == plain[split].labels.tolist()
        assert hit[split].camids.tolist() == plain[split].camids.tolist()
        want = decoded[split]
        for got in (all_x(first[split]), all_x(hit[split])):
            assert all(torch.equal(got[m], want[m]) for m in want)
    assert set(all_x(hit["train"], ["nir"])) == {"nir"}
    assert hit.spec == plain.spec and hit.skipped == 0


def test_other_data_under_the_same_name_is_rebuilt_never_used(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load(rgbnt201_tree(tmp_path / "a"), cache)
    root_b = rgbnt201_tree(tmp_path / "b")  # same names, other pixels
    for mod in ("RGB", "NI", "TI"):
        write_jpg(root_b / "train_171" / mod / rgbnt201_name(1, 1), 200)
    b = load(root_b, cache)
    assert folders(cache) == ["rgbnt201-query", "rgbnt201-train"]  # replaced, not added
    want = all_x(load(root_b, None)["train"])
    assert torch.equal(all_x(b["train"])["rgb"], want["rgb"])
    meta = json.loads(next(cache.glob("rgbnt201-train-*/meta.json")).read_text())
    assert meta["version"] == "2" and len(meta["fingerprint"]) == 64


def test_a_half_built_cache_is_never_opened(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = rgbnt201_tree(tmp_path / "data"), tmp_path / "cache"
    load(root, cache)
    for meta in cache.glob("*/meta.json"):
        meta.unlink()  # as if the writer died before its last step
    calls = []
    real = reid.read_image
    monkeypatch.setattr(reid, "read_image", lambda *a: calls.append(1) or real(*a))
    again = load(root, cache)
    assert calls and torch.equal(all_x(again["query"])["tir"],
                                 all_x(load(root, None)["query"])["tir"])

    def die(*a: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(reid, "read_image", die)
    shutil.rmtree(cache)
    with pytest.raises(KeyboardInterrupt):
        load(root, cache)
    assert list(cache.iterdir()) == []  # the temporary folder is gone, nothing published


def truncate(path: Path) -> Path:
    """A real JPEG cut short (a killed download): its header still parses."""
    write_jpg(path, 90, size=(64, 64), mode="L")
    path.write_bytes(path.read_bytes()[:300])
    return path


@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("damage", [write_garbage, truncate])
def test_a_corrupt_file_is_named_at_build_and_on_every_hit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_error: str, damage) -> None:  # noqa: ANN001
    root, cache = rgbnt201_tree(tmp_path / "data"), tmp_path / "cache"
    bad = damage(root / "test" / "TI" / rgbnt201_name(51, 3))
    for attempt in ("build", "hit"):
        if attempt == "hit":
            no_decoding(monkeypatch)
        if on_error == "raise":
            with pytest.raises(DataError, match=f"{bad}: cannot read image"):
                load(root, cache)
        else:
            with pytest.warns(UserWarning, match=f"{bad}: cannot read image"):
                data = load(root, cache, on_error="skip")
            assert data.skipped == 1 and len(data["query"]) == 5


def test_cremad_seeds_share_one_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = cremad_tree(tmp_path / "data"), tmp_path / "cache"
    kw = {"root": root, "image_size": (8, 8), "cache_dir": cache, "val_fraction": 0.2}
    seed0 = create_dataset("cremad", seed=0, **kw)
    no_decoding(monkeypatch)
    monkeypatch.setattr(av, "read_wav", None)
    seed1 = create_dataset("cremad", seed=1, **kw)
    assert folders(cache) == ["cremad-test", "cremad-train"]
    assert seed0["val"].records != seed1["val"].records
    assert len(seed1["train"]) + len(seed1["val"]) == 18
    audio = all_x(seed1["val"], ["audio"])["audio"]
    assert audio.shape[1:] == (1, 257, 188) and torch.isfinite(audio).all()


def test_cached_splits_pickle_without_their_arrays(tmp_path: Path) -> None:
    ds = load(rgbnt201_tree(tmp_path / "data"), tmp_path / "cache")["gallery"]
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000  # the folder, not 6 decoded samples of 3 modalities
    copy = pickle.loads(blob)
    assert torch.equal(copy[2]["x"]["rgb"], ds[2]["x"]["rgb"])


def test_a_build_in_worker_processes_stores_the_same(tmp_path: Path) -> None:
    root = rgbnt201_tree(tmp_path / "data")
    write_garbage(root / "test" / "NI" / rgbnt201_name(50, 1))
    with pytest.warns(UserWarning, match="1 bad sample"):
        one = load(root, tmp_path / "one", on_error="skip")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.warns(UserWarning, match="1 bad sample"):
            two = load(root, tmp_path / "two", on_error="skip")
    finally:
        torch.set_num_threads(threads)
    assert one.skipped == two.skipped == 1
    for split in ("train", "query"):
        a, b = all_x(one[split]), all_x(two[split])
        assert all(torch.equal(a[m], b[m]) for m in a)


def test_images_are_stored_as_uint8_and_audio_as_float32(tmp_path: Path) -> None:
    import numpy as np

    load(rgbnt201_tree(tmp_path / "reid"), tmp_path / "cache")
    create_dataset("cremad", root=cremad_tree(tmp_path / "av"), image_size=(8, 8),
                   cache_dir=tmp_path / "cache", val_fraction=0.2)
    dtypes = {f"{p.parent.name.split('-')[0]}/{p.stem}": str(np.load(p, mmap_mode="r").dtype)
              for p in (tmp_path / "cache").glob("*-train-*/*.npy")}
    assert dtypes["rgbnt201/rgb"] == dtypes["rgbnt201/tir"] == "uint8"  # a quarter the bytes
    assert set(dtypes.values()) == {"uint8", "float32"} and dtypes["cremad/audio"] == "float32"


def test_the_fingerprint_text_is_stable(tmp_path: Path) -> None:
    """The data fingerprint hashes each file's path relative to the files' common folder, its
    size and its mtime: caches built before stay valid when the code computing it changes."""
    import hashlib
    import os

    from trainers.data.cache import cache_key
    from trainers.data.contract import ModalitySpec

    files = []
    for k, rel in enumerate(("a/RGB/1.jpg", "a/NI/1.jpg", "b/RGB/2.jpg", "b/NI/2.jpg")):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * (k + 1))
        os.utime(p, ns=(10**18 + k, 10**18 + k))
        files.append(p)
    records = [files[:2], files[2:]]
    h = hashlib.sha256()
    for ps in records:
        for p in ps:
            st = p.stat()
            h.update(f"{os.path.relpath(p, tmp_path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(b"|")
    mods = [ModalitySpec("rgb", "image", (3, 4, 4))]
    assert cache_key("d", "train", len, mods, records)[1] == h.hexdigest()
    one_folder = [[files[0]], [files[0].with_name("x.jpg")]]
    one_folder[1][0].write_bytes(b"y")
    h = hashlib.sha256()
    for (p,) in one_folder:
        h.update(f"{p.name}\0{p.stat().st_size}\0{p.stat().st_mtime_ns}\n|".encode())
    assert cache_key("d", "train", len, mods, one_folder)[1] == h.hexdigest()
