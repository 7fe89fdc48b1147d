"""What a cluster can scale to, from its nodes and its autoscaler's node types (no Ray)."""

from __future__ import annotations

import pytest

from orchestrator.capacity import (
    Capacity,
    NodeShape,
    check_fits,
    max_jobs,
    node_types_from_config,
    resolve_gpus,
)
from trainers.config import ConfigError

AUTOSCALER = {"head_node_type": "head", "max_workers": 4, "available_node_types": {
    "head": {"resources": {"CPU": 8, "train_driver": 8}, "max_workers": 0},
    "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}, "min_workers": 0, "max_workers": 4},
    "unsized": {"resources": {}, "max_workers": 2}}}


def capacity() -> Capacity:
    head = NodeShape("head-now", {"CPU": 8.0, "train_driver": 8.0}, 1)  # the only node up
    return Capacity((head, *node_types_from_config(AUTOSCALER)))


def test_gpu_nodes_that_do_not_exist_yet_count() -> None:
    cap = capacity()
    assert [s.name for s in cap.shapes] == ["head-now", "gpu_worker"]  # head type skipped
    assert resolve_gpus(None, cap) == 1.0  # auto: the autoscaler can add GPU nodes
    assert resolve_gpus(0, cap) == 0 and resolve_gpus(2, cap) == 2  # explicit wins
    assert resolve_gpus(None, Capacity((NodeShape("cpu", {"CPU": 2.0}, 1),))) == 0.0
    # 4 GPU nodes of 1 GPU each: 4 one-GPU jobs at once; 2-worker jobs: 2 at once
    assert max_jobs({"CPU": 1, "GPU": 1}, cap) == 4
    assert max_jobs({"CPU": 1, "GPU": 1}, cap, workers=2) == 2
    # CPU-only jobs of 2 CPUs: 4 on the head + 2 x 4 on the GPU workers
    assert max_jobs({"CPU": 2}, cap) == 12


def test_a_worker_that_fits_nowhere_is_one_line() -> None:
    cap = capacity()
    check_fits({"CPU": 4, "GPU": 1}, cap)  # fits a gpu_worker
    for bundle, text in [({"CPU": 1, "GPU": 2}, "needs 1 CPU, 2 GPU"),
                         ({"CPU": 16}, "needs 16 CPU")]:
        with pytest.raises(ConfigError, match=text) as err:
            check_fits(bundle, cap)
        assert "largest:" in str(err.value) and "\n" not in str(err.value)
