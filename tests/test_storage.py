"""Storage as a URI, without Ray: the one storage module against a real S3 API on 127.0.0.1
(moto), run identity that does not depend on where the store is, and one-line errors for
storage that cannot be used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from orchestrator.aggregate import record_rows
from orchestrator.jobs import prepare_storage
from orchestrator.results import read_results, write_results
from tests.conftest import make_bucket, tiny_cfg
from trainers.checkpoint import load_checkpoint
from trainers.compare import dependent_config
from trainers.runs import load_record, run_name, train_or_reuse
from trainers.storage import Storage, StorageError

ROOT = Path(__file__).resolve().parents[1]


def test_s3_storage_round_trip_and_node_cache(s3_server: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSION_CACHE_DIR", str(tmp_path / "cache"))
    store = prepare_storage(make_bucket(s3_server, "roundtrip") + "/prefix")
    assert store.location == "s3://roundtrip/prefix" and not store.is_local
    store.write_text("hello", "run-a", "x.txt")
    assert store.read_text("run-a", "x.txt") == "hello"
    assert [f.base_name for f in store.list()] == ["run-a"]
    local = store.local_copy("run-a", "x.txt")
    assert local.read_text() == "hello" and str(local).startswith(str(tmp_path / "cache"))
    store.write_text("changed", "run-a", "x.txt")
    assert store.local_copy("run-a", "x.txt") == local  # fetched once per node
    assert not any(Path(".").glob("s3:*"))  # nothing written to a local "s3:" folder


def test_bad_storage_is_one_line_before_training(s3_server: str) -> None:
    make_bucket(s3_server, "exists")
    cases = {
        "s3://no-such-bucket/x": "bucket 'no-such-bucket' does not exist",
        "foo://bucket/x": "not a location pyarrow can open",
    }
    for location, text in cases.items():
        with pytest.raises(StorageError, match=text) as err:
            prepare_storage(location)
        assert "\n" not in str(err.value)
    dead = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "sweeps/unimodal_ensembles.py", "--smoke-test",
                           "--storage", "s3://exists/a"], cwd=ROOT, env=dead,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: storage 's3://exists/a' is not "
                                                   "writable"), proc.stderr
    assert "connect" in lines[0].lower()


def test_no_credentials_is_one_line(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No keys, no credential files, instance metadata off: whatever pyarrow reports, the
    error is one line that names the storage."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(StorageError) as err:
        prepare_storage("s3://some-bucket/x")
    assert "\n" not in str(err.value) and "s3://some-bucket/x" in str(err.value)


def test_local_writers_of_one_file_never_share_a_temp_file(tmp_path: Path) -> None:
    store = Storage.open(tmp_path)
    payloads = [bytes([i]) * 200_000 for i in range(4)]

    def write(data: bytes) -> None:
        for _ in range(20):
            store.write_bytes(data, "run", "model.pt")

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / "run" / "model.pt").read_bytes() in payloads  # one whole write
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.pt"]  # no .tmp left


def test_runs_in_s3_are_reused_and_dependencies_resolve_by_name(tiny, s3_server: str) -> None:  # noqa: ANN001
    store = make_bucket(s3_server, "runs") + "/store"
    uni = {m: train_or_reuse(tiny, tiny_cfg("unimodal", params={"modality": m}), store)
           for m in tiny.spec.modality_names}
    assert all(not r.reused for r in uni.values())
    again = train_or_reuse(tiny, tiny_cfg("unimodal", params={"modality": "m1"}), store)
    assert again.reused and again.metrics == uni["m1"].metrics
    ume_cfg = dependent_config("ume", tiny_cfg(), {m: r.name for m, r in uni.items()})
    assert ume_cfg.params["members"] == {m: r.name for m, r in uni.items()}  # names, not paths
    ume = train_or_reuse(tiny, ume_cfg, store)
    model = load_checkpoint(ume.checkpoint, tiny.spec, Storage.open(store))
    assert model.name == "ume"
    write_results(record_rows(ume, ume_cfg, tiny.spec), store + "/results")
    assert set(read_results(store + "/results")["run_id"]) == {ume.name}


def test_same_names_from_relative_absolute_and_moved_stores(tiny, tmp_path: Path,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    uni = {m: train_or_reuse(tiny, tiny_cfg("unimodal", params={"modality": m}), "rel")
           for m in tiny.spec.modality_names}
    refs = {m: r.name for m, r in uni.items()}
    umt = dependent_config("umt", tiny_cfg(), refs, {"lambda_distill": 1.0})
    relative = train_or_reuse(tiny, umt, "rel")
    absolute = train_or_reuse(tiny, umt, tmp_path / "rel")
    assert relative.name == absolute.name == run_name(tiny.spec, umt) and absolute.reused
    shutil.move(tmp_path / "rel", tmp_path / "moved")
    for cfg in [tiny_cfg("unimodal", params={"modality": m}) for m in refs] + [umt]:
        assert train_or_reuse(tiny, cfg, tmp_path / "moved").reused  # nothing retrained
    assert load_record(tmp_path / "moved", relative.name) is not None


def test_temp_files_of_killed_writers_are_cleaned_up(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = tiny_cfg("fusion_concat", epochs=1)
    folder = tmp_path / run_name(tiny.spec, cfg)
    folder.mkdir()
    old, fresh = folder / ".a1b2.tmp", folder / ".c3d4.tmp"
    old.write_bytes(b"half a checkpoint")
    fresh.write_bytes(b"a live writer's")
    os.utime(old, (0, 0))  # written long ago by a writer that was killed
    train_or_reuse(tiny, cfg, tmp_path)
    assert not old.exists() and fresh.exists()
    assert {p.name for p in folder.iterdir()} == {"model.pt", "result.json", ".c3d4.tmp"}
