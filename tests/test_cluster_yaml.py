"""The shipped cluster.yaml passes Ray's offline validation and ours; broken variants fail clearly.

No cloud access and no boto3: Ray's AWS prepare_config does not import it (asserted below).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cluster_config import (
    ClusterConfigError,
    find_placeholders,
    load_cluster_config,
    main,
    validate_cluster_config,
)

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    return load_cluster_config(CLUSTER_YAML)


@pytest.fixture
def cfg(shipped: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(shipped)


def test_shipped_cluster_yaml_passes(cfg: dict[str, Any]) -> None:
    before = copy.deepcopy(cfg)
    full = validate_cluster_config(cfg)
    assert cfg == before, "validation must not modify its input"
    assert full["head_node_type"] == "head"
    assert full["available_node_types"]["head"]["resources"]["train_driver"] > 0
    assert full["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"] == "g5.xlarge"
    assert "cluster_synced_files" in full  # filled by Ray's prepare_config
    # In a fresh process (the S3 tests' server imports boto3 into this one):
    probe = ("import sys; from orchestrator.cluster_config import load_cluster_config, "
             f"validate_cluster_config; validate_cluster_config(load_cluster_config("
             f"{str(CLUSTER_YAML)!r})); print('boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, cwd=CLUSTER_YAML.parent)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]


def test_shipped_placeholders_are_listed(cfg: dict[str, Any]) -> None:
    keys = find_placeholders(cfg)
    assert "available_node_types.head.node_config.ImageId" in keys
    assert "available_node_types.gpu_worker.node_config.ImageId" in keys
    assert any(k.startswith("setup_commands[") for k in keys)  # FUSION_STORAGE bucket


def test_cli_ok_and_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(CLUSTER_YAML)]) == 1  # the shipped file's EDIT placeholders
    out = capsys.readouterr().out.strip()
    assert out.startswith("error: ") and "ImageId" in out and "\n" not in out
    edited = tmp_path / "edited.yaml"
    edited.write_text(CLUSTER_YAML.read_text().replace("ami-0123456789abcdef0", "ami-0abc")
                      .replace("your-bucket", "lab-bucket").replace("YOUR_ACCOUNT_ID", "1234"))
    assert main([str(edited)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    relative = tmp_path / "relative.yaml"
    relative.write_text(edited.read_text().replace("s3://lab-bucket/fusion-orchestrator",
                                                   "results"))
    assert main([str(relative)]) == 1
    assert "not shared storage" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(CLUSTER_YAML.read_text().replace("setup_commands:", "setup_comands:", 1))
    assert main([str(bad)]) == 1
    assert "setup_comands" in capsys.readouterr().out


def _setup(cfg: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    cfg["setup_commands"] = [c.replace(old, new) for c in cfg["setup_commands"]]
    return cfg


def _replace_head_start(cfg: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    cfg["head_start_ray_commands"] = [c.replace(old, new) for c in cfg["head_start_ray_commands"]]
    return cfg


def _misspelled(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["setup_comands"] = cfg.pop("setup_commands")
    return cfg


def _misspelled_nested(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["available_node_types"]["gpu_worker"]["max_worker"] = 2
    return cfg


def _unknown_head(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["head_node_type"] = "head_node"
    return cfg


def _wrong_type(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["max_workers"] = "four"
    return cfg


def _no_provider(cfg: dict[str, Any]) -> dict[str, Any]:
    del cfg["provider"]
    return cfg


def _too_many_min_workers(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["available_node_types"]["gpu_worker"]["min_workers"] = 9
    cfg["available_node_types"]["gpu_worker"]["max_workers"] = 9
    return cfg


def _no_image(cfg: dict[str, Any]) -> dict[str, Any]:
    del cfg["available_node_types"]["gpu_worker"]["node_config"]["ImageId"]
    return cfg


def _drop(key: str) -> Any:
    def edit(cfg: dict[str, Any]) -> dict[str, Any]:
        del cfg[key]
        return cfg

    return edit


def _drop_setup_line(fragment: str) -> Any:
    def edit(cfg: dict[str, Any]) -> dict[str, Any]:
        cfg["setup_commands"] = [c for c in cfg["setup_commands"] if fragment not in c]
        return cfg

    return edit


def _worker_ray_unpinned(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["worker_setup_commands"] = ["pip install 'ray[default]>=2.50'"]
    return cfg


BROKEN = {
    "misspelled key": (_misspelled, r"unknown key 'setup_comands'; did you mean 'setup_commands'"),
    "misspelled nested key": (
        _misspelled_nested,
        r"unknown key 'available_node_types\.gpu_worker\.max_worker'; did you mean 'max_workers'",
    ),
    "unknown head_node_type": (
        _unknown_head,
        r"head_node_type.*must be one of.*; set head_node_type to one of the keys",
    ),
    "wrong type": (_wrong_type, r"max_workers: 'four' is not of type 'integer'"),
    "missing provider": (_no_provider, r"'provider' is missing.*provider: \{type: aws"),
    "min_workers above max_workers": (
        _too_many_min_workers,
        r"max_workers.*smaller than.*; raise max_workers",
    ),
    "dashboard on 0.0.0.0": (
        lambda c: _replace_head_start(c, "127.0.0.1", "0.0.0.0"),
        r"head_start_ray_commands binds to 0\.0\.0\.0.*--dashboard-host=127\.0\.0\.1",
    ),
    "default head_start_ray_commands": (
        _drop("head_start_ray_commands"),
        r"set head_start_ray_commands explicitly; Ray's default binds the dashboard to 0\.0\.0\.0",
    ),
    "no dashboard host": (
        lambda c: _replace_head_start(c, " --dashboard-host=127.0.0.1", ""),
        r"--dashboard-host=127\.0\.0\.1",
    ),
    "dashboard disabled": (
        lambda c: _replace_head_start(c, "--port=6379", "--port=6379 --include-dashboard=false"),
        r"disable the dashboard.*State API",
    ),
    "unpinned ray": (
        lambda c: _setup(c, "==2.60.0", ""),
        r"setup_commands installs 'ray\[.*\]'; pin it with .*==2\.60\.0",
    ),
    "other ray version": (
        lambda c: _setup(c, "==2.60.0", "==2.59.0"),
        r"installs 'ray\[.*\]==2\.59\.0'; pin it",
    ),
    "ray without default extra": (
        lambda c: _setup(c, "ray[default,tune,train]", "ray[tune,train]"),
        r"without extras \['default'\]",
    ),
    "ray not installed": (_drop_setup_line("ray["), r"do not install Ray 2\.60\.0"),
    "unpinned ray on workers": (_worker_ray_unpinned, r"worker_setup_commands installs"),
    "default setup_commands": (_drop("setup_commands"), r"set setup_commands explicitly"),
    "default ImageId": (_no_image, r"gpu_worker\.node_config\.ImageId is not set"),
    "project not installed": (_drop_setup_line("pip install -e"), r"pip install -e <dir>"),
    "project not mounted": (_drop("file_mounts"), r"file_mounts target"),
    "no FUSION_STORAGE": (_drop_setup_line("FUSION_STORAGE"), r"must export FUSION_STORAGE"),
    "local FUSION_STORAGE": (
        lambda c: _setup(c, "s3://your-bucket/fusion-orchestrator", "~/ray_results"),
        r"FUSION_STORAGE='~/ray_results'.*not shared storage",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_is_rejected(cfg: dict[str, Any], case: str) -> None:
    edit, pattern = BROKEN[case]
    with pytest.raises(ClusterConfigError, match=pattern) as info:
        validate_cluster_config(edit(cfg))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_home_relative_paths_count_as_mounted(cfg: dict[str, Any]) -> None:
    cfg["file_mounts"] = {"~/fusion-orchestrator/": "."}
    _setup(
        cfg,
        "pip install -e /home/ubuntu/fusion-orchestrator",
        "pip install -e ~/fusion-orchestrator",
    )
    validate_cluster_config(cfg)


def test_nfs_storage_and_guarded_install_are_accepted(cfg: dict[str, Any]) -> None:
    _setup(cfg, "s3://your-bucket/fusion-orchestrator", "/mnt/efs/fusion")
    cfg["setup_commands"].append("which ray || pip install 'ray[default,tune,train]==2.60.0'")
    validate_cluster_config(cfg)


def test_load_rejects_non_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ClusterConfigError, match=r"list.yaml: a cluster config must be a YAML"):
        load_cluster_config(path)
    with pytest.raises(ClusterConfigError, match=r"cannot read cluster config"):
        load_cluster_config(tmp_path / "missing.yaml")
