"""A 2-node Ray cluster (``ray.cluster_utils.Cluster``, 1 CPU per node): the three unimodal
jobs of the synthetic reid set run concurrently on both nodes, UniCat is assembled from them and
the script prints its mAP table.

The cluster needs a Ray of its own, so it lives in a subprocess (with its own ``RAY_TMPDIR``)
that joins it with ``--address``; the session's Ray is untouched.
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

from tests.test_orchestrator_ray import ray_processes

ROOT = Path(__file__).resolve().parents[1]
TWO_NODES = """
import json, sys
from ray.cluster_utils import Cluster
from sweeps import unimodal_ensembles

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
try:
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    code = unimodal_ensembles.main(["--address", cluster.address, *sys.argv[1:]])
    print("NODES", json.dumps([node.node_id for node in cluster.list_all_nodes()]))
finally:
    cluster.shutdown()
sys.exit(code)
"""


def test_modality_jobs_spread_over_two_nodes(tmp_path: Path) -> None:
    own_tmp = tempfile.mkdtemp(prefix="rayc")
    env = {**os.environ, "RAY_TMPDIR": own_tmp}
    args = ["--smoke-test", "--dataset", "reid_synth", "--storage", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", TWO_NODES, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    nodes = set(json.loads(proc.stdout.split("NODES ", 1)[1].splitlines()[0]))
    used = re.findall(r"\[jobs\] trained unimodal:(rgb|nir|tir) seed 0 \(\S+\) on node (\w+)",
                      proc.stderr)  # progress lines are logged
    assert sorted(m for m, _ in used) == ["nir", "rgb", "tir"]
    assert {node for _, node in used} == nodes and len(nodes) == 2
    assert re.search(r"unicat\s+\d+\.\d\d", proc.stdout)  # the summary table (mAP)
    assert "map" in proc.stdout
    assert not ray_processes(own_tmp)
    shutil.rmtree(own_tmp, ignore_errors=True)
