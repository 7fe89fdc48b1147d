"""One builder per cache entry: jobs that miss it at once decode it once (a local folder and
S3), a waiter says for whom it waits, and a lock whose holder died never blocks."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import trainers.data.reid_benchmarks as reid
import trainers.locks as locks
from tests.conftest import make_bucket
from tests.loader_trees import rgbnt201_tree
from tests.test_cache import all_x, load
from trainers.storage import Storage

SPLITS = ("train", "query")
FILES = 78  # rgbnt201_tree: (10 train + 3 test ids) x 2 cameras x 3 modalities


def job(root: Path, cache: str, node: Path, decodes: Path, out: Path, start: object) -> None:
    """One job (a spawned process): loads the dataset with ``cache``, appending every file it
    decodes to ``decodes``, and saves the arrays it got."""
    torch.set_num_threads(1)  # decode in this process, where the counting reader is
    os.environ["FUSION_CACHE_DIR"] = str(node)
    real = reid.read_image

    def counting(path: Path, *a: object) -> torch.Tensor:
        with decodes.open("a") as f:
            f.write(f"{path}\n")
        time.sleep(0.02)  # long enough that a job without the lock would miss too
        return real(path, *a)

    reid.read_image = counting
    start.wait(timeout=60)  # type: ignore[attr-defined]
    data = load(root, cache)
    torch.save({s: all_x(data[s]) for s in SPLITS}, out)


def two_jobs_at_once(tmp_path: Path, cache: str) -> list[dict]:
    root, decodes = rgbnt201_tree(tmp_path / "data"), tmp_path / "decodes.txt"
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=job, args=(root, cache, tmp_path / f"node-{k}", decodes,
                                           tmp_path / f"out-{k}.pt", start)) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0]
    per_file = Counter(decodes.read_text().split())
    assert len(per_file) == FILES and set(per_file.values()) == {1}  # every file decoded once
    want = {s: all_x(load(root, None)[s]) for s in SPLITS}
    got = [torch.load(tmp_path / f"out-{k}.pt") for k in (0, 1)]
    for arrays in got:
        for s in SPLITS:
            assert all(torch.equal(arrays[s][m], want[s][m]) for m in want[s])
    return got


def test_two_jobs_missing_a_local_entry_at_once_decode_it_once(tmp_path: Path) -> None:
    two_jobs_at_once(tmp_path, str(tmp_path / "cache"))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")) == []


def test_two_nodes_missing_an_s3_entry_at_once_decode_it_once(s3_server: str,
                                                             tmp_path: Path) -> None:
    uri = make_bucket(s3_server, "cache-lease") + "/data-cache"
    two_jobs_at_once(tmp_path, uri)
    store = Storage.open(uri)
    for entry in store.list():
        assert not store.is_file(entry.base_name, "build.lease")  # released
    assert (tmp_path / "node-0" / "data-cache").is_dir()  # each node has its own copy
    assert (tmp_path / "node-1" / "data-cache").is_dir()


@pytest.fixture
def cache_log() -> Iterator[list[str]]:
    """The lines ``trainers.locks`` logs (at INFO, whatever the packages' logging is)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("trainers.locks")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_a_lock_left_by_a_dead_builder_is_taken_over(tmp_path: Path,
                                                     cache_log: list[str]) -> None:
    root, cache = rgbnt201_tree(tmp_path / "data"), tmp_path / "cache"
    load(root, cache)
    entries = sorted(p.name for p in cache.iterdir())
    for p in cache.iterdir():
        p.rename(cache / f"built-{p.name}")  # missing again
    pid = dead_pid()
    for name in entries:  # as if a builder had been killed mid-build
        (cache / f".{name}.lock").write_text(json.dumps(
            {"host": socket.gethostname(), "pid": pid, "since": time.time(), "token": "x"}))
    t0 = time.monotonic()
    data = load(root, cache)
    assert time.monotonic() - t0 < 30  # not STALE_S (10 min)
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith("built-")) == entries
    assert sum(f"pid {pid} on host" in line and "is gone" in line for line in cache_log) == 2
    for s in SPLITS:
        assert torch.equal(all_x(data[s])["rgb"], all_x(load(root, None)[s])["rgb"])


def test_a_waiter_names_the_live_builder_and_uses_its_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_log: list[str]) -> None:
    root, cache = rgbnt201_tree(tmp_path / "data"), tmp_path / "cache"
    load(root, tmp_path / "warm")  # the entries the "builder" will publish
    monkeypatch.setattr(locks, "POLL_S", 0.05)
    builder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    cache.mkdir()
    try:
        for entry in (tmp_path / "warm").iterdir():
            (cache / f".{entry.name}.lock").write_text(json.dumps(
                {"host": socket.gethostname(), "pid": builder.pid, "since": 0, "token": "b"}))

        def publish() -> None:
            time.sleep(0.5)
            for entry in sorted((tmp_path / "warm").iterdir()):
                entry.rename(cache / entry.name)
                (cache / f".{entry.name}.lock").unlink()

        thread = threading.Thread(target=publish)
        thread.start()
        monkeypatch.setattr(reid, "read_image", decode_nothing)
        t0 = time.monotonic()
        data = load(root, cache)
        waited = time.monotonic() - t0
        thread.join()
    finally:
        builder.kill()
        builder.wait()
    assert waited >= 0.4 and len(data["train"]) > 0
    waits = [line for line in cache_log if "waiting" in line]
    assert len(waits) == 1 and f"built by pid {builder.pid} on host" in waits[0]
    assert "rgbnt201-train-" in waits[0]


def decode_nothing(*a: object) -> None:
    raise AssertionError("a waiter must use the published entry, not decode")


def test_a_lease_nobody_renews_is_taken_over_after_stale_s(
        s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        cache_log: list[str]) -> None:
    root = rgbnt201_tree(tmp_path / "data")
    uri = make_bucket(s3_server, "cache-stale") + "/data-cache"
    monkeypatch.setenv("FUSION_CACHE_DIR", str(tmp_path / "node"))
    monkeypatch.setattr(locks, "POLL_S", 0.05)
    monkeypatch.setattr(locks, "STALE_S", 0.5)
    monkeypatch.setattr(locks, "SETTLE_S", 0.05)
    load(root, tmp_path / "local")  # the entry names
    store = Storage.open(uri)
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    for name in names:  # a builder on another host, killed: its lease is never renewed
        store.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": 0, "beat": 0}),
                         name, "build.lease")
    t0 = time.monotonic()
    data = load(root, uri)
    assert time.monotonic() - t0 >= 0.5
    stale = [line for line in cache_log if "has not renewed it for 0.5 s" in line]
    assert len(stale) == 2 and "pid 1 on host elsewhere" in stale[0]
    assert all(store.is_file(name, "meta.json") and not store.is_file(name, "build.lease")
               for name in names)
    assert torch.equal(all_x(data["query"])["tir"], all_x(load(root, None)["query"])["tir"])
