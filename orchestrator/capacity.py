"""What the cluster can give a job: the nodes up now plus the nodes its autoscaler may add.

A cluster started by ``ray up`` keeps its autoscaler's node types in the bootstrap config on the
head node (``~/ray_bootstrap_config.yaml``, resources filled in from the instance types), and a
GPU worker type usually starts at ``min_workers: 0``: judged only by the nodes up *now*, such a
cluster has no GPU, jobs would never ask for one and the autoscaler would never start one. So
GPUs per job (``auto``), how many jobs run at once and whether a job fits on any node at all are
judged against the nodes up now **and** the node types in that config
(``$FUSION_AUTOSCALER_CONFIG`` names another file; Ray's v2 autoscaler publishes its node types
itself, which is read when present). A job that fits nowhere is a one-line error before anything
trains, instead of a worker group that waits forever.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml

from trainers.config import ConfigError

CONFIG_ENV = "FUSION_AUTOSCALER_CONFIG"
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # written on the head node by `ray up`
_SCHEDULED = ("CPU", "GPU")


@dataclass(frozen=True)
class NodeShape:
    """Nodes of one kind: ``count`` of them (-1: no limit), each with ``resources``."""

    name: str
    resources: Mapping[str, float]
    count: int


@dataclass(frozen=True)
class Capacity:
    shapes: tuple[NodeShape, ...]

    def max_per_node(self, resource: str) -> float:
        return max((s.resources.get(resource, 0.0) for s in self.shapes), default=0.0)

    def fits(self, bundle: Mapping[str, float]) -> bool:
        return any(_per_node(s, bundle) >= 1 for s in self.shapes)

    def at_once(self, bundle: Mapping[str, float]) -> int:
        """How many ``bundle``s the cluster holds at once when fully scaled up."""
        total = 0
        for shape in self.shapes:
            per_node = _per_node(shape, bundle)
            if per_node and shape.count < 0:
                return 1 << 20
            total += per_node * shape.count
        return total

    def describe(self) -> str:
        return "; ".join(f"{s.name} x{'∞' if s.count < 0 else s.count}: "
                         + ", ".join(f"{k} {v:g}" for k, v in sorted(s.resources.items())
                                     if k in _SCHEDULED) for s in self.shapes)


def _per_node(shape: NodeShape, bundle: Mapping[str, float]) -> int:
    counts = [shape.resources.get(k, 0.0) / v for k, v in bundle.items() if v > 0]
    return int(min(counts, default=0) + 1e-9)


def node_types_from_config(config: Mapping) -> list[NodeShape]:
    """Worker node types of an autoscaler config (``available_node_types``) as shapes."""
    head = config.get("head_node_type")
    out = []
    for name, spec in (config.get("available_node_types") or {}).items():
        if name == head:
            continue
        limit = spec.get("max_workers", config.get("max_workers", 0))
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        if limit and resources:
            out.append(NodeShape(name, resources, int(limit)))
    return out


def _config_file() -> Path | None:
    explicit = os.environ.get(CONFIG_ENV)
    path = Path(explicit or BOOTSTRAP_CONFIG).expanduser()
    if explicit and not path.is_file():
        raise ConfigError(f"{CONFIG_ENV}={explicit!r} is not a file; point it at the cluster's "
                          "autoscaler config or unset it")
    return path if path.is_file() else None


def autoscaler_node_types() -> list[NodeShape]:
    """The node types the autoscaler may add (empty for a fixed or local cluster)."""
    path = _config_file()
    if path is not None:
        text = path.read_text()
        config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return node_types_from_config(config or {})
    published = ray._private.state.state.get_cluster_config()  # private; v2 autoscaler only
    if published is None:
        return []
    return [NodeShape(g.name, {k: float(v) for k, v in g.resources.items()}, int(g.max_count))
            for g in published.node_group_configs if g.max_count != 0 and g.resources]


def cluster_capacity() -> Capacity:
    """Alive nodes (one shape each) plus the autoscaler's node types."""
    alive = [NodeShape(n["NodeID"][:8], dict(n["Resources"]), 1)
             for n in ray.nodes() if n.get("Alive")]
    return Capacity(tuple(alive + autoscaler_node_types()))


def worker_bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def resolve_gpus(requested: float | None, capacity: Capacity) -> float:
    """``None`` (auto): one GPU per worker when any node has or may get a GPU, else none."""
    if requested is None:
        return 1.0 if capacity.max_per_node("GPU") >= 1 else 0.0
    return requested


def check_fits(bundle: Mapping[str, float], capacity: Capacity) -> None:
    """One-line error when no node, up now or addable, can hold one worker of a job."""
    if capacity.fits(bundle):
        return
    most = {k: capacity.max_per_node(k) for k in bundle}
    wanted = ", ".join(f"{v:g} {k}" for k, v in bundle.items() if v)
    biggest = ", ".join(f"{v:g} {k}" for k, v in most.items())
    raise ConfigError(f"a job's worker needs {wanted} but no node of this cluster has or can "
                      f"get that much (largest: {biggest}); lower --cpus-per-job/--gpus-per-job "
                      "or add a bigger node type to the cluster")


def max_jobs(bundle: Mapping[str, float], capacity: Capacity, workers: int = 1) -> int:
    """Jobs of ``workers`` workers each that run at once on the fully scaled cluster."""
    return max(1, math.floor(capacity.at_once(bundle) / workers))
