"""The preprocessing cache on object storage (``cache_dir="s3://bucket/prefix/data-cache"``).

Memory maps need local files, so a cache on an object store is built locally, uploaded, and
fetched once per node into the node cache (``$FUSION_CACHE_DIR``, see
:mod:`trainers.storage`), where it is memory-mapped like a local cache.

Layout of one split under the cache location::

    <name>/<fingerprint[:16]>-<build id>/<modality>.npy, meta.json   the arrays of one build
    <name>/meta.json                                                 the pointer, written last

A build's arrays go to a folder of their own, then the pointer (the build's ``meta.json``
plus ``"data": <folder>``) is written in one all-or-nothing write: a reader that finds no
pointer, or a pointer from other data (fingerprint mismatch), or a pointer whose folder is
gone, builds again; it never opens a half-uploaded build. Each node keeps fetched builds under
``<node cache>/data-cache/<name>/<folder>`` (downloaded under a temporary name, then renamed),
so every job on the node after the first opens them without touching the network. Builds
from other data are deleted once a newer one is published; builds of the same data (two
jobs that built at once) are left to whoever points at them.

Jobs that miss a split at once build it once: the first to hold ``<name>/build.lease`` builds
and publishes, the others wait for the pointer (:func:`trainers.locks.build_once`). An object
store has no atomic create-if-absent through ``pyarrow.fs``, so the lease is written, left to
settle (``SETTLE_S``, 1 s) and read back, and is held by whoever reads back its own token. The
residual race: when one job's lease write takes longer than that to land, after the other job
read back its own token, both hold it and both build (the second pointer written wins; the
other build is the same data and stays until a build of other data replaces both). A lease
nobody renews for ``STALE_S`` (10 min; its holder renews it every minute while building) is
taken over, so a killed builder delays the others by at most that.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import pyarrow.fs as pafs

from trainers.data.cache import Reader, SplitStore, build
from trainers.data.contract import ModalitySpec
from trainers.locks import LeaseLock, build_once
from trainers.storage import Storage, StorageError, cache_dir, pa_errors

POINTER = "meta.json"
LEASE = "build.lease"  # held by the job building the split (trainers.locks.LeaseLock)


def open_or_build(storage: Storage, name: str, fingerprint: str, records: Sequence,
                  read: Reader, modalities: Sequence[ModalitySpec], dtype: str) -> SplitStore:
    """The split's store from ``storage``: this node's copy, a fresh download, or a new build
    (by the one job holding the split's lease) that is uploaded for every later job."""
    def published() -> SplitStore | None:
        meta = pointer(storage, name)
        if meta is None or meta.get("fingerprint") != fingerprint:
            return None
        local = fetch(storage, name, str(meta.get("data", "")))
        return SplitStore.open(local, fingerprint, modalities) if local else None

    def build_and_publish() -> SplitStore:
        sub = f"{fingerprint[:16]}-{uuid.uuid4().hex[:8]}"
        store = build(node_folder(name, sub), fingerprint, records, read, modalities, dtype)
        publish(storage, name, sub, store)
        return store

    return build_once(LeaseLock(storage, name, LEASE), name, published, build_and_publish)


def node_folder(name: str, sub: str) -> Path:
    return cache_dir() / "data-cache" / name / sub


def pointer(storage: Storage, name: str) -> dict | None:
    """The published pointer of a split, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(storage.read_text(name, POINTER))
    except (FileNotFoundError, StorageError, ValueError):
        return None


def fetch(storage: Storage, name: str, sub: str) -> Path | None:
    """This node's copy of build ``sub`` (downloaded once), or None when it is gone."""
    target = node_folder(name, sub)
    if (target / "meta.json").is_file():
        return target
    if not sub or "/" in sub or not storage.is_file(name, sub, "meta.json"):
        return None
    tmp = target.parent / f".tmp-{sub}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        pafs.copy_files(storage.path(name, sub), str(tmp), source_filesystem=storage.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        os.replace(tmp, target)
    except pa_errors() as err:
        if not (target / "meta.json").is_file():  # not published meanwhile by another process
            raise StorageError(f"cannot fetch the data cache {storage.uri(name, sub)}: "
                               f"{str(err).strip().splitlines()[0]}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def publish(storage: Storage, name: str, sub: str, store: SplitStore) -> None:
    """Upload a build's folder, then point at it; then delete builds of other data."""
    try:
        storage.upload_dir(store.folder, name, sub)
    except pa_errors() as err:
        raise StorageError(f"cannot upload the data cache to {storage.uri(name, sub)}: "
                           f"{str(err).strip().splitlines()[0]}") from None
    storage.write_text(json.dumps({**store.meta, "data": sub}), name, POINTER)
    keep = sub.split("-", 1)[0]
    for info in storage.list(name):
        if info.type == pafs.FileType.Directory and not info.base_name.startswith(keep):
            try:
                storage.delete(name, info.base_name)
            except pa_errors():
                pass  # another job removed it first
