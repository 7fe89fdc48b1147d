"""Preprocessing done once: decoded samples cached as memory-mapped ``.npy`` arrays.

A file-backed loader given ``cache_dir`` decodes every listed sample of a split once, into
one array per modality, and every later job on that storage (other seeds, trials,
strategies) opens the arrays instead of decoding. Validation happens once, while building: a
sample that fails to decode is recorded with its message, and every job reports it the way
``on_error`` asks (raise naming the file, or skip and count) without reading it again.

Layout: ``<cache_dir>/<dataset>-<split>-<identity>/`` with ``<modality>.npy`` (``(N,
*shape)``: uint8 images, normalised when gathered, for loaders with a raw reader (the reid
loaders: a quarter of the size), else float32) and ``meta.json`` (written last).
``identity`` hashes what decoding depends on (the loader's reader and its settings, the
modality shapes, the loader's and this module's versions); ``meta.json`` holds the
``fingerprint`` of the data (file names relative to their common folder, sizes and
modification times). A folder whose fingerprint does not match the files listed now is
rebuilt, never used. A build is written under a temporary name and renamed into place, so a
half-built cache is never opened; leftover ``.tmp-*`` folders from killed builds are safe to
delete. Jobs that miss one folder at once build it once: the first takes ``.<folder>.lock``,
the others wait for it (:mod:`trainers.locks`). Clearing the cache = deleting the folder.

``cache_dir`` may also be an object-store URI (``s3://bucket/prefix/data-cache``): built
locally, uploaded, fetched once per node (:mod:`trainers.data.remote_cache`). The sweep
scripts default it to ``<storage root>/data-cache`` (:func:`default_cache_dir`), next to the
run store, so every job, seed and trial on that storage shares one cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from trainers.data.contract import (
    DataError,
    DatasetSpec,
    ModalitySpec,
    MultimodalDataset,
    check_modality,
)
from trainers.locks import FileLock, build_once
from trainers.storage import Storage

CACHE_VERSION = "2"  # 2: uint8 images from raw readers
FOLDER = "data-cache"  # the cache's folder directly under a storage root
Reader = Callable[..., Mapping[str, torch.Tensor]]


def default_cache_dir(storage_root: str | Path | Storage) -> str:
    """``<storage root>/data-cache``: the cache shared by every job on that storage."""
    return Storage.open(storage_root).uri(FOLDER)


def describe_reader(read: Reader) -> str:
    """A stable text of a reader and its settings (callables by name, no addresses)."""
    def text(v: object) -> str:
        return f"{v.__module__}.{v.__qualname__}" if callable(v) else repr(v)

    func, kw = read, {}
    if isinstance(read, functools.partial):
        func, kw = read.func, dict(read.keywords)
    version = getattr(sys.modules.get(func.__module__), "VERSION", "")
    args = ", ".join(f"{k}={text(v)}" for k, v in sorted(kw.items()))
    return f"{text(func)}({args}) v{version}"


def cache_key(dataset: str, split: str, read: Reader, modalities: Sequence[ModalitySpec],
              files: Sequence[Sequence[Path]]) -> tuple[str, str]:
    """(folder name, fingerprint) of one split's cache: the one place that decides reuse.

    The folder name hashes what decoding depends on; the fingerprint hashes the data (file
    names relative to their common folder, sizes, modification times), so a moved root keeps
    its name and changed files are detected.
    """
    ident = json.dumps([CACHE_VERSION, dataset, describe_reader(read),
                        [(m.name, m.kind, m.shape) for m in modalities]])
    name = f"{dataset}-{split}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    flat = [Path(p) for ps in files for p in ps]
    base = os.path.commonpath([str(p.parent) for p in flat]) if flat else ""
    folders: dict[str, str] = {}  # relpath once per folder, not per file (the same text)
    h = hashlib.sha256()
    for ps in files:
        for p in map(os.fspath, ps):
            folder, file = os.path.split(p)
            if folder not in folders:
                folders[folder] = os.path.relpath(folder or ".", base)
            st = os.stat(p)
            rel = file if folders[folder] == "." else os.path.join(folders[folder], file)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(b"|")
    return name, h.hexdigest()


class SplitStore:
    """One split's cached arrays, opened read-only as memory maps."""

    def __init__(self, folder: Path, meta: dict) -> None:
        self.folder, self.meta = folder, meta
        self.bad: dict[int, str] = {int(k): v for k, v in meta["bad"].items()}
        self.arrays = {m: np.load(folder / f"{m}.npy", mmap_mode="r") for m in meta["shapes"]}

    @classmethod
    def open(cls, folder: Path, fingerprint: str,
             modalities: Sequence[ModalitySpec]) -> SplitStore | None:
        """The store, or None when absent, from other data or of other shapes."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("fingerprint") != fingerprint:
                return None
            store = cls(folder, meta)
        except (OSError, ValueError, KeyError):
            return None
        if any(tuple(store.arrays[m.name].shape[1:]) != m.shape for m in modalities
               if m.name in store.arrays) or len(store.arrays) != len(modalities):
            return None
        return store


def build(folder: Path, fingerprint: str, records: Sequence, read: Reader,
          modalities: Sequence[ModalitySpec], dtype: str = "float32") -> SplitStore:
    """Decode every record into a temporary folder, then rename it into place."""
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        arrays = {m.name: np.lib.format.open_memmap(tmp / f"{m.name}.npy", mode="w+",
                                                    dtype=np.dtype(dtype),
                                                    shape=(len(records), *m.shape))
                  for m in modalities}
        bad = {}
        for i, x, error in decoded(records, read, modalities):
            if error:
                bad[i] = error
            for m, t in x.items():
                arrays[m][i] = t.numpy()
        for a in arrays.values():
            a.flush()
        del arrays
        meta = {"version": CACHE_VERSION, "fingerprint": fingerprint, "bad": bad, "dtype": dtype,
                "shapes": {m.name: list(m.shape) for m in modalities},
                "reader": describe_reader(read)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        _publish(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    store = SplitStore.open(folder, fingerprint, modalities)
    if store is None:  # another job published other data at the same moment
        raise DataError(f"cache {folder} changed while it was being built; run again")
    return store


class _Decode(torch.utils.data.Dataset):
    """Record i -> (i, {modality: tensor}, "") or (i, {}, why it failed)."""

    def __init__(self, records: Sequence, read: Reader,
                 modalities: Sequence[ModalitySpec]) -> None:
        self.records, self.read, self.modalities = records, read, modalities

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, dict[str, torch.Tensor], str]:
        r = self.records[i]
        try:
            x = self.read(r)
            return i, {m.name: _checked(x, m, r) for m in self.modalities}, ""
        except DataError as e:
            return i, {}, str(e)


def decoded(records: Sequence, read: Reader,
            modalities: Sequence[ModalitySpec]) -> Iterator[tuple[int, dict, str]]:
    """Every record decoded once, in order; in ``torch.get_num_threads()`` worker processes
    when there is more than one thread (the job's CPUs), else in this process."""
    ds = _Decode(records, read, modalities)
    workers = min(torch.get_num_threads(), len(records))
    if workers < 2:
        return (ds[i] for i in range(len(ds)))
    return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers))


def _checked(x: Mapping[str, torch.Tensor], m: ModalitySpec, record: object) -> torch.Tensor:
    t = check_modality(m, x.get(m.name), getattr(record, "files", (record,))[0])
    return t if t.dtype == torch.uint8 else t.float()


def _publish(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; a stale ``folder`` is moved aside first. If another
    job published first, its (complete) folder wins."""
    if folder.exists():
        stale = folder.parent / f".tmp-stale-{folder.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    try:
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise


class DatasetCache:
    """The cache of one dataset build: opens or builds each scanned split's store and makes
    the splits from it."""

    def __init__(self, cache_dir: str | Path | Storage, dataset: str, read: Reader,
                 modalities: Sequence[ModalitySpec], raw: Reader | None = None) -> None:
        """``raw``: the loader's reader of uint8 images (stored as such, normalised when
        gathered); else ``read`` and float32."""
        self.storage, self.dataset = Storage.open(cache_dir), dataset
        self.read, self.modalities = raw or read, tuple(modalities)
        self.dtype = "uint8" if raw is not None else "float32"
        self.rows: dict[tuple[Path, ...], tuple[SplitStore, int]] = {}

    def bad(self, split: str, records: Sequence) -> dict[int, str]:
        """Position in ``records`` -> why that sample failed when the cache was built. Records
        already in an opened store (e.g. a val split carved from train) reuse it."""
        if not all(tuple(r.files) in self.rows for r in records):
            self.store(split, records)
        out = {}
        for i, r in enumerate(records):
            store, row = self.rows[tuple(r.files)]
            if row in store.bad:
                out[i] = store.bad[row]
        return out

    def store(self, split: str, records: Sequence) -> SplitStore:
        """Open the split's store, or build it (a miss or other data)."""
        name, fp = cache_key(self.dataset, split, self.read, self.modalities,
                             [r.files for r in records])
        if self.storage.is_local:
            folder = Path(self.storage.path(name))
            store = build_once(FileLock(folder.with_name(f".{name}.lock")), name,
                               lambda: SplitStore.open(folder, fp, self.modalities),
                               lambda: build(folder, fp, records, self.read, self.modalities,
                                             self.dtype))
        else:
            from trainers.data.remote_cache import open_or_build

            store = open_or_build(self.storage, name, fp, records, self.read, self.modalities,
                                  self.dtype)
        for i, r in enumerate(records):
            self.rows[tuple(r.files)] = (store, i)
        return store

    def dataset_split(self, spec: DatasetSpec, split: str, records: Sequence) -> CachedDataset:
        found = [self.rows.get(tuple(r.files)) for r in records]
        if not found or any(f is None for f in found) or len({id(f[0]) for f in found}) > 1:
            raise DataError(f"{self.dataset} split {split!r}: records not in one cached split")
        rows = np.array([f[1] for f in found], dtype=np.int64)
        store = found[0][0]
        return CachedDataset(spec, split, store.folder, rows, records,
                             raw=store.meta.get("dtype") == "uint8")


class CachedDataset(MultimodalDataset):
    """A split read from a cache's memory-mapped arrays (gathered by index, no decoding)."""

    def __init__(self, spec: DatasetSpec, split: str, folder: Path, rows: np.ndarray,
                 records: Sequence, raw: bool = False) -> None:
        super().__init__(spec, split, [r.label for r in records],
                         camids=[r.camid for r in records],
                         sceneids=[r.sceneid for r in records])
        self.folder, self.rows, self.raw = folder, rows, raw
        self.records = list(records)
        self._open()

    def _open(self) -> None:
        self.arrays = {m: np.load(self.folder / f"{m}.npy", mmap_mode="r")
                       for m in self.spec.modality_names}

    def __getstate__(self) -> dict:  # send the folder, not the mapped arrays
        return {k: v for k, v in super().__getstate__().items() if k != "arrays"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def _finish(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.raw:
            return x
        from trainers.data.images import normalise_images

        return normalise_images(x)

    def _load(self, i: int) -> Mapping[str, torch.Tensor]:
        return self._finish({m: torch.from_numpy(np.array(a[self.rows[i]]))
                             for m, a in self.arrays.items()})

    def batch(self, idx: torch.Tensor) -> dict:
        rows = self.rows[idx.numpy()]
        return {"x": self._finish({m: torch.from_numpy(a[rows]) for m, a in self.arrays.items()}),
                "y": self.labels[idx], "camid": self.camids[idx],
                "sceneid": self.sceneids[idx], "index": idx}
