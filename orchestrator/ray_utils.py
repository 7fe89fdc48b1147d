"""Connecting to Ray: start a local Ray or join a cluster, and always shut it down again.

``ray.init(address="host:port")`` with nothing behind the address retries for minutes before
failing, so :func:`check_address` first opens a TCP connection with a short timeout and fails with
one line that says what to do. A local Ray is started with the dashboard on 127.0.0.1: besides
being the place to watch a run, the dashboard serves the State API that Train-inside-Tune needs to
free the placement groups of trials stopped early (docs/ray.md, point 5).

Every job this process starts gets :func:`job_env` as its runtime environment: Train's
controller polls its workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (Ray's default 2 s), and
a run's start, reports and end are noticed only at a poll: 0.2 s takes seconds off every job
(docs/ray.md, point 4: a tiny fit, 15 s -> 8-9 s). A value set in the environment wins.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray

from trainers.logs import verbose

LOG = logging.getLogger(__name__)

DASHBOARD_HOST = "127.0.0.1"
CLIENT_PREFIX = "ray://"
DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001
# Custom resource of the head node in cluster.yaml; Ray's own head marker is the fallback.
DRIVER_RESOURCE = "train_driver"
HEAD_RESOURCE = "node:__internal_head__"
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
JOB_ENV_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
# The driver's values reach every worker: the report interval, and the S3 endpoint of an
# S3-compatible store (credentials are not copied: workers use their own, e.g. a node's role).
JOB_ENV_PASSED = ("FUSION_REPORT_INTERVAL_S", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                  "AWS_DEFAULT_REGION")


class ClusterUnreachable(ConnectionError):
    """``--address`` names no running Ray cluster; the message says how to fix it."""


@dataclass(frozen=True)
class RayInfo:
    address: str  # the GCS address, for other processes that want to join
    dashboard_url: str  # "" when the dashboard is not running
    started_here: bool  # True when this process started (and will stop) Ray


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (optionally ``ray://``-prefixed) as a (host, port) pair."""
    client = address.startswith(CLIENT_PREFIX)
    rest = address.removeprefix(CLIENT_PREFIX)
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, DEFAULT_CLIENT_PORT if client else DEFAULT_GCS_PORT
    if not port.isdigit() or not host:
        raise ClusterUnreachable(
            f"--address {address!r} is not host:port; use e.g. 10.0.0.5:6379, "
            "ray://10.0.0.5:10001 or auto"
        )
    return host, int(port)


def check_address(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast when nothing listens at ``address`` (``auto`` is left to Ray, which is quick)."""
    if address in ("auto", "local"):
        return
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as err:
        raise ClusterUnreachable(
            f"no Ray cluster at {address!r} ({host}:{port} did not answer within {timeout_s:g} s: "
            f"{err.strerror or err}); start one with `ray start --head` or `ray up cluster.yaml`, "
            "or leave out --address to start a local Ray"
        ) from None


def _info(started_here: bool) -> RayInfo:
    url = ray._private.worker.get_dashboard_url()  # private, read-only; "" without a dashboard
    return RayInfo(ray.get_runtime_context().gcs_address, f"http://{url}" if url else "",
                   started_here)


def job_env() -> dict[str, str]:
    """Environment variables of every task and actor of this job (on every node)."""
    env = {key: os.environ.get(key, value) for key, value in JOB_ENV_DEFAULTS.items()}
    env.update({key: os.environ[key] for key in JOB_ENV_PASSED if key in os.environ})
    return env


def connect(address: str | None = None, num_cpus: int | None = None) -> RayInfo:
    """Join the cluster at ``address``, or start a local Ray with the dashboard on 127.0.0.1.

    Without ``address`` a NEW local Ray is started (``address="local"``), never a ``ray start``
    head that happens to run on this machine. Every process of the job gets ``RAY_ADDRESS`` of
    the cluster it belongs to: Ray processes that look their cluster up (Train's placement-group
    cleaner) otherwise fail with "Found multiple active Ray instances" when another Ray runs on
    the same machine, and a sweep then stalls with its finished trials' resources never freed.
    """
    if address:
        check_address(address)
        pinned = _gcs_address(address)
        env = {**job_env(), **({"RAY_ADDRESS": pinned} if pinned else {})}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **_quiet())
        except ConnectionError as err:
            raise ClusterUnreachable(_connect_error(address, err)) from None
        return _info(started_here=False)
    port = _free_port()
    env = {**job_env(), "RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{port}"}
    with scoped_env(GCS_PORT_ENV, str(port)):  # read by ray.init when it starts the head
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True,
                 dashboard_host=DASHBOARD_HOST, runtime_env={"env_vars": env}, **_quiet())
    return _info(started_here=True)


@contextmanager
def scoped_env(key: str, value: str) -> Iterator[None]:
    """``os.environ[key] = value`` for the block only (for settings Ray reads when a call
    starts), then the earlier value or none."""
    saved = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _quiet() -> dict[str, object]:
    """Ray's own INFO logs and its workers' output reach the console with ``-v`` only."""
    return {"logging_level": logging.INFO if verbose() else logging.WARNING,
            "log_to_driver": verbose()}


def _gcs_address(address: str) -> str:
    """The GCS address to pin (``auto`` resolved the way Ray resolves it); "" for ray://."""
    if address.startswith(CLIENT_PREFIX):
        return ""
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die  # private

        try:
            return canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as err:
            raise ClusterUnreachable(f"--address auto: {str(err).splitlines()[0]}; pass the "
                                     "cluster's host:port instead") from None
    return address


def _connect_error(address: str, err: Exception) -> str:
    cause = f"{err} {err.__cause__ or ''}"
    if "InvalidAuthToken" in cause or "Authentication" in type(err.__cause__).__name__:
        return (f"the Ray cluster at {address!r} uses token authentication and this process has "
                "no valid token; copy it from the head (`ray get-auth-token`) into "
                "RAY_AUTH_TOKEN or ~/.ray/auth_token, and set RAY_AUTH_MODE=token")
    return (f"no Ray cluster at {address!r} ({str(err).splitlines()[0]}); start one with "
            "`ray start --head`, or leave out --address to start a local Ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[RayInfo]:
    """Connect (see :func:`connect`) and disconnect at the end, also on error.

    A process that is already connected (a notebook, the test session) keeps its connection:
    it is used as is and left running for its owner to shut down.
    """
    if ray.is_initialized():
        yield _info(started_here=False)
        return
    info = connect(address, num_cpus)
    where = "local Ray" if info.started_here else f"Ray cluster at {address}"
    dash = f"; dashboard: {info.dashboard_url}" if info.dashboard_url else ""
    LOG.info("connected to %s%s", where, dash)
    try:
        yield info
    finally:
        ray.shutdown()


def driver_resources() -> dict[str, float]:
    """A sliver of a head-only resource: pins Train drivers (and so Train controllers, which
    ``fit()`` places on the caller's node) to the head, never to a GPU or spot worker."""
    name = DRIVER_RESOURCE if DRIVER_RESOURCE in ray.cluster_resources() else HEAD_RESOURCE
    return {name: 0.001}
