"""The cluster path without a cloud: object storage through a real S3 API on 127.0.0.1 (moto),
a 2-node cluster whose nodes share no folder, and an autoscaler that must start a GPU node.

What this proves and what it does not: the S3 tests run the same code paths as a real bucket
(pyarrow's S3 client, Ray's ``storage_filesystem``); the fake GPU node proves that a job asks for
a GPU the cluster does not have yet, that the autoscaler starts a node for it and that the
worker lands there; it cannot run CUDA, so the run ends with the one-line "no usable CUDA
device" error, which is the expected outcome. Only a real GPU (benchmarks/gpu_check.py) proves
training on CUDA.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from orchestrator.train_fn import DataRef, JobResources, finished_record, make_job
from orchestrator.trials import run_in_trials
from sweeps import umt_tune, unimodal_ensembles
from tests.conftest import make_bucket
from tests.fake_cluster import FakeAutoscalingCluster
from tests.test_orchestrator_ray import output, ray_processes
from trainers.config import TrainConfig
from trainers.storage import Storage

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--smoke-test", "--dataset", "synthetic_both", "--address", "auto"]


def test_scripts_report_and_reuse_on_s3(ray_session: str, s3_server: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    storage = make_bucket(s3_server, "cluster") + "/a"
    assert unimodal_ensembles.main([*COMMON, "--storage", storage]) == 0
    first = output(capsys)
    assert len(re.findall(r"\[jobs\] trained unimodal:m\d seed 0", first)) == 2
    store = Storage.open(storage)
    table = pq.read_table(store.path("smoke", "results"), filesystem=store.fs).to_pandas()
    assert {"unimodal", "ume"} <= set(table["strategy"])
    assert not any(Path.cwd().glob("s3:*"))  # no local folder named after the URI

    assert unimodal_ensembles.main([*COMMON, "--storage", storage]) == 0
    again = output(capsys)
    assert "[jobs] training" not in again and "reusing 2 finished run(s)" in again

    assert umt_tune.main([*COMMON, "--storage", storage, "--num-samples", "1"]) == 0
    assert "umt" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "report", f"{storage}/smoke"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert store.is_file("smoke", "reports", "report.md")
    assert "umt" in store.read_text("smoke", "reports", "report.md")


def test_killed_trial_resumes_from_its_s3_state(ray_session: str, s3_server: str) -> None:
    """A single-worker job trains inside its Tune trial; the trial fails after epoch 2, Tune
    retries it and the run resumes from the loop state it saved in S3 (not from scratch)."""
    storage = Storage.open(make_bucket(s3_server, "faults") + "/a")
    ref = DataRef("synthetic_both", {"n": 120, "dim": 4})
    cfg = TrainConfig(strategy="fusion_concat", epochs=3, embed_dim=4, hidden_dim=8)
    job = make_job(ref, ref.load().spec, cfg, storage, fail_once_at_epoch=2)
    resources = JobResources(cpus_per_worker=1, gpus_per_worker=0, max_failures=1)
    outcome = run_in_trials([job], resources, limit=1)[job.name]
    assert storage.read_text(*job.fail_marker).startswith("crashed after epoch 2")
    assert outcome["resumed_from"] == 2  # from the state in S3, not scratch
    record = finished_record(job, outcome)
    assert [h["epoch"] for h in record.history()] == [1, 2, 3]
    assert not storage.is_file("_ray", "state", f"{job.name}.pt")  # dropped: the run is stored
    assert storage.is_dir("_ray", "jobs")  # Tune's own files are in S3 too


TWO_NODES = """
import json, os, sys
from ray.cluster_utils import Cluster
from sweeps import unimodal_ensembles

head_dir, worker_dir, driver_dir = sys.argv[1:4]
os.chdir(head_dir)
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
try:
    os.chdir(worker_dir)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    os.chdir(driver_dir)
    code = unimodal_ensembles.main(["--address", cluster.address, *sys.argv[4:]])
    print("NODES", json.dumps([node.node_id for node in cluster.list_all_nodes()]))
finally:
    cluster.shutdown()
sys.exit(code)
"""


def test_two_nodes_in_different_folders_share_only_s3(s3_server: str, tmp_path: Path) -> None:
    dirs = [tmp_path / d for d in ("head", "worker", "driver")]
    for d in dirs:
        d.mkdir()
    own_tmp = tempfile.mkdtemp(prefix="rays3")
    storage = make_bucket(s3_server, "twonodes") + "/a"
    env = {**os.environ, "RAY_TMPDIR": own_tmp, "PYTHONPATH": str(ROOT)}
    args = ["--smoke-test", "--dataset", "reid_synth", "--storage", storage]
    proc = subprocess.run([sys.executable, "-c", TWO_NODES, *map(str, dirs), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    nodes = set(json.loads(proc.stdout.split("NODES ", 1)[1].splitlines()[0]))
    used = re.findall(r"\[jobs\] trained unimodal:(rgb|nir|tir) seed 0 \(\S+\) on node (\w+)",
                      proc.stderr)  # progress lines are logged
    assert {node for _, node in used} == nodes and len(nodes) == 2
    store = Storage.open(storage)
    runs = store.child("smoke", "runs").list()  # --smoke-test: the smoke/ layout
    assert sum(1 for f in runs if f.base_name.startswith("reid_synth-")) == 4
    for d in dirs:  # nothing of the store was written to a node's own folder
        assert not list(d.rglob("result.json")) and not list(d.rglob("*.parquet"))
    assert not ray_processes(own_tmp)


AUTOSCALED = """
import os, sys, ray
from tests.fake_cluster import FakeAutoscalingCluster
from sweeps import unimodal_ensembles

cluster = FakeAutoscalingCluster(1, {"gpu_worker": {"resources": {"CPU": 1, "GPU": 1},
                                     "node_config": {}, "min_workers": 0, "max_workers": 1}})
cluster.start()
os.environ["FUSION_AUTOSCALER_CONFIG"] = str(cluster.config_path)
try:
    ray.init(cluster.address)
    gpus_before = ray.cluster_resources().get("GPU", 0)
    ray.shutdown()
    code = unimodal_ensembles.main(["--address", cluster.address, *sys.argv[1:]])
    ray.init(cluster.address)
    gpu_nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    ray.shutdown()
    print("GPUS_BEFORE", gpus_before, "GPU_NODES", ",".join(gpu_nodes))
finally:
    cluster.stop()
    print("LEFT", len(cluster.processes()))
sys.exit(code)
"""


def test_autoscaler_starts_a_gpu_node_for_a_job(tmp_path: Path) -> None:
    # A cluster of its own on loopback: token auth off, so that no other test's token matters.
    # The cluster's temp dir goes in a short folder of its own (Ray's socket paths must stay
    # under ~107 characters), by which its processes are found.
    own_tmp = Path(tempfile.mkdtemp(prefix="asc"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
           "RAY_AUTH_MODE": "disabled", "TMPDIR": str(own_tmp)}
    args = ["--smoke-test", "--dataset", "synthetic_both", "--storage", str(tmp_path / "store"),
            "--seeds", "0"]
    try:
        proc = subprocess.run([sys.executable, "-c", AUTOSCALED, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
    finally:  # also when the run timed out: stop what its cluster left, by its temp dir
        for line in ray_processes(str(own_tmp), wait_s=0):
            subprocess.run(["kill", "-9", line.split()[0]], check=False)
        shutil.rmtree(own_tmp, ignore_errors=True)
    out = proc.stdout + proc.stderr
    assert "GPUS_BEFORE 0" in out, out[-3000:]  # no GPU up when the jobs were launched
    assert "1 GPU(s) per training worker (--gpus-per-job auto)" in out, out[-3000:]
    gpu_nodes = out.split("GPU_NODES ", 1)[1].split()[0].split(",")
    assert gpu_nodes and gpu_nodes[0], "the autoscaler started no GPU node"
    # The worker ran on the new GPU node and refused to fall back to the CPU:
    assert f"no usable CUDA device: this worker on node {gpu_nodes[0][:8]}" in out, out[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "no usable CUDA device" in errors[0], errors
    assert proc.returncode == 2 and "LEFT 0" in out


def test_a_sweep_beside_an_unrelated_ray_instance(tmp_path: Path) -> None:
    """Another Ray head runs on this machine: the script starts its OWN local Ray (it does not
    join that one) and pins its address for every process it starts, so Train's placement-group
    cleaner does not die on "multiple active Ray instances" and the sweep finishes."""
    other = FakeAutoscalingCluster(1, {}).start()
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled",
               "RAY_TMPDIR": tempfile.mkdtemp(prefix="rayu")}
        proc = subprocess.run([sys.executable, "sweeps/umt_tune.py", "--smoke-test", "--dataset",
                               "synthetic_both", "--num-samples", "2", "--storage",
                               str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "connected to local Ray" in proc.stderr and re.search(r"umt\s+\d+\.\d\d",
                                                                     proc.stdout)
        assert "multiple active Ray instances" not in proc.stdout + proc.stderr
        assert not ray_processes(env["RAY_TMPDIR"])
    finally:
        other.stop()
    assert not other.processes()


def test_token_auth_failure_is_said_as_such() -> None:
    from orchestrator.ray_utils import _connect_error

    class AuthenticationError(Exception):
        pass

    err = ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379")
    err.__cause__ = AuthenticationError("RPC error: InvalidAuthToken")
    text = _connect_error("10.0.0.5:6379", err)
    assert "token authentication" in text and "RAY_AUTH_TOKEN" in text and "\n" not in text
    plain = _connect_error("10.0.0.5:6379", ConnectionError("timed out"))
    assert plain.startswith("no Ray cluster at '10.0.0.5:6379'")
