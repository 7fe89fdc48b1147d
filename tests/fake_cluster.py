"""A Ray cluster whose autoscaler adds fake nodes on this machine (Ray's fake multi-node
provider, as Ray's own autoscaler tests use), started and stopped by handle.

``ray.cluster_utils.AutoscalingCluster`` runs ``ray stop --force`` (every Ray on the machine) and
reads a config file the Ray wheel does not ship, so this starts the head itself with a unique
temp dir and stops exactly the processes whose command line names that dir.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

FIXED_KEYS = {
    "auth": {}, "docker": {}, "upscaling_speed": 1.0, "initialization_commands": [],
    "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
    "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
    "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
    "rsync_filter": [],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeAutoscalingCluster:
    """A CPU head plus ``worker_types`` that the autoscaler starts on demand."""

    def __init__(self, head_cpus: int, worker_types: dict[str, dict[str, Any]]) -> None:
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="fo-asc-")
        self.config_path = Path(self.tmp) / "autoscaler.json"
        types = {"head": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
                 **worker_types}
        config = {"cluster_name": "fake", "max_workers": 8, "head_node_type": "head",
                  "idle_timeout_minutes": 5, "available_node_types": types,
                  "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                               "disable_node_updaters": True,
                               "disable_launch_config_check": True,
                               "gcs_address": f"127.0.0.1:{self.port}"},
                  **FIXED_KEYS}
        self.config_path.write_text(json.dumps(config))
        self.head_cpus = head_cpus

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeAutoscalingCluster:
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        ray_cli = str(Path(sys.executable).with_name("ray"))
        subprocess.run([ray_cli, "start", "--head", f"--port={self.port}",
                        "--node-ip-address=127.0.0.1", f"--num-cpus={self.head_cpus}",
                        f"--autoscaling-config={self.config_path}", f"--temp-dir={self.tmp}",
                        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                        "--dashboard-port=0"],
                       env=env, check=True, capture_output=True)
        return self

    def processes(self) -> list[psutil.Process]:
        out = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(self.tmp in arg for arg in proc.info["cmdline"] or []):
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    def stop(self) -> None:
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.Error:
                pass
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
