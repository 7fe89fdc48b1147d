"""Shared fixtures: tiny data, CPU, one thread, Ray started at most once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from trainers.config import TrainConfig
from trainers.data import create_dataset
from trainers.data.contract import DataBundle

torch.set_num_threads(1)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="session")
def tiny() -> DataBundle:
    """2 modalities of 8-d vectors, 3 classes, 150 samples."""
    return create_dataset("synthetic_unimodal", n=150, dim=8, num_classes=3, noise=0.5)


@pytest.fixture(scope="session")
def tiny_reid() -> DataBundle:
    """3 image modalities (8x8), 8 train ids, 4 val ids, 4 test ids, 2 cameras."""
    return create_dataset("reid_synth", num_ids=16, val_ids=4, test_ids=4, images_per_id=6,
                          num_cameras=2, image_size=(8, 8))


def tiny_cfg(strategy: str = "fusion_concat", **kw: object) -> TrainConfig:
    from trainers.strategies import strategy_class

    base = {"embed_dim": 8, "hidden_dim": 16, "epochs": 2, "batch_size": 32, "seed": 0}
    base = {k: v for k, v in base.items() if k not in strategy_class(strategy).ignored_config}
    return TrainConfig(strategy=strategy, **{**base, **kw})


def finished_unimodal_runs(data: DataBundle, store: object) -> dict[str, str]:
    from trainers.runs import train_or_reuse

    return {m: str(train_or_reuse(data, tiny_cfg("unimodal", params={"modality": m}),
                                  store).checkpoint)
            for m in data.spec.modality_names}


@pytest.fixture(scope="session")
def unimodal_ckpts(tiny: DataBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Finished unimodal runs (teachers, UME members, warm starts) for the tiny data."""
    return finished_unimodal_runs(tiny, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def reid_ckpts(tiny_reid: DataBundle,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Finished unimodal reid runs for the tiny reid data."""
    return finished_unimodal_runs(tiny_reid, tmp_path_factory.mktemp("reid_runs"))


# --- Ray (orchestrator tests) ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """ONE local Ray for the whole test session (2 CPUs), shut down at its end; yields its address.

    The dashboard stays on: Train inside Tune with ASHA early stopping needs its State API to free
    the placement groups of stopped trials (docs/ray.md, point 5). ``RAY_TMPDIR`` is a
    short fresh folder (Ray's socket paths must stay under ~107 characters).
    """
    import shutil
    import tempfile

    import ray

    tmp = tempfile.mkdtemp(prefix="ray")
    os.environ["RAY_TMPDIR"] = tmp
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


# --- object storage: a real S3 API on 127.0.0.1 ----------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """ONE moto S3 server on 127.0.0.1 (a free port) for the session, stopped at its end; dummy
    credentials and ``AWS_ENDPOINT_URL`` point this process (and the Ray workers it starts, which
    inherit the environment) at it. Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                       "AWS_EC2_METADATA_DISABLED": "true"})
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
          "AWS_EC2_METADATA_DISABLED")


def make_bucket(endpoint: str, name: str) -> str:
    import pyarrow.fs as pafs

    host = endpoint.split("://", 1)[1]
    pafs.S3FileSystem(endpoint_override=host, scheme="http", access_key="testing",
                      secret_key="testing", region="us-east-1",
                      allow_bucket_creation=True).create_dir(name)
    return f"s3://{name}"
