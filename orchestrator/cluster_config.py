"""Offline check of a `ray up` cluster YAML: Ray's own validation plus this project's rules.

`ray up` first runs two steps that need no cloud access: ``prepare_config`` (merges the
provider's ``defaults.yaml`` and fills per-node-type limits) and ``validate_config`` (the JSON
schema, which forbids unknown keys, plus semantic checks such as "head_node_type must be one of
available_node_types"). :func:`validate_cluster_config` runs exactly those two steps on a copy and
then checks what Ray does not know we need:

* every node type's ``node_config`` sets ``ImageId`` and the file sets ``setup_commands`` and
  ``head_start_ray_commands`` explicitly (Ray's AWS defaults are an old AMI, a nightly Ray wheel
  and a dashboard bound to 0.0.0.0);
* ``setup_commands`` pin ``ray[default,tune,train]==2.60.0`` (``default`` brings the dashboard,
  whose State API Train-inside-Tune needs to clean up placement groups);
* the head starts with ``--dashboard-host=127.0.0.1``; 0.0.0.0 appears in no start command;
* ``setup_commands`` ``pip install -e`` a path that ``file_mounts`` uploads (the project);
* ``setup_commands`` export ``FUSION_STORAGE`` as s3://, gs:// or an absolute (NFS) path.

Every failure is a one-line :class:`ClusterConfigError` (a ``ValueError``) naming the key and the
fix. Ray's AWS ``prepare_config`` does not import boto3; only ``ray up`` itself needs it.
``prepare_config``/``validate_config`` are private Ray APIs (pinned Ray 2.60.0).

CLI: ``python -m orchestrator.cluster_config cluster.yaml`` prints ``ok``, or the error (a
placeholder of the shipped file still unedited is one), exiting 1.
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from ray.autoscaler._private.util import prepare_config, validate_config  # private API

RAY_VERSION = "2.60.0"
RAY_EXTRAS = ("default", "tune", "train")
DASHBOARD_HOST = "127.0.0.1"
STORAGE_ENV = "FUSION_STORAGE"
STORAGE_SCHEMES = ("s3://", "gs://", "gcs://")
PLACEHOLDERS = ("ami-0123456789abcdef0", "your-bucket", "YOUR_ACCOUNT_ID")
_RAY_PIN = f'pip install -U "ray[{",".join(RAY_EXTRAS)}]=={RAY_VERSION}"'
_COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
)
_SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")"})


class ClusterConfigError(ValueError):
    """A cluster YAML that `ray up` or this project would reject; the message names the fix."""


def load_cluster_config(path: str | Path) -> dict[str, Any]:
    """Parse the YAML file (no validation) and check that it holds a mapping."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ClusterConfigError(f"cannot read cluster config {str(path)!r}: {e}") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ClusterConfigError(f"{path}: invalid YAML ({first}); fix the syntax") from None
    if not isinstance(cfg, dict):
        raise ClusterConfigError(
            f"{path}: a cluster config must be a YAML mapping but got {type(cfg).__name__}"
        )
    return cfg


def validate_cluster_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate like `ray up` does, then apply the project's rules.

    Returns the prepared config (Ray's defaults filled in), i.e. what `ray up` would use; ``cfg``
    itself is not modified.
    """
    full = _ray_validate(cfg)
    _check_explicit_keys(cfg)
    _check_ray_pin(full)
    _check_dashboard(full)
    _check_project_install(full)
    _check_storage(full)
    return full


def find_placeholders(cfg: dict[str, Any]) -> list[str]:
    """Dotted keys whose value still contains a placeholder of the shipped cluster.yaml."""
    return [key for key, value in _walk(cfg) if any(p in value for p in PLACEHOLDERS)]


# --- Ray's own validation -------------------------------------------------------------------


def _ray_validate(cfg: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(cfg.get("provider"), dict) or "type" not in cfg["provider"]:
        raise ClusterConfigError(
            "cluster config: 'provider' is missing or has no 'type'; add e.g. "
            "provider: {type: aws, region: us-west-2}"
        )
    try:
        full = prepare_config(copy.deepcopy(cfg))
        validate_config(full)
    except jsonschema.ValidationError as e:
        raise ClusterConfigError(_schema_message(e)) from None
    except KeyError as e:
        raise ClusterConfigError(
            f"cluster config: required key {e} is missing; add it (see Ray's cluster YAML "
            "reference)"
        ) from None
    except (ValueError, TypeError, AttributeError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = next((h for k, h in _RAY_HINTS.items() if k in first), "")
        raise ClusterConfigError(f"cluster config rejected by Ray: {first}{hint}") from None
    return full


_RAY_HINTS = {
    "head_node_type": "; set head_node_type to one of the keys of available_node_types",
    "min_workers": "; raise max_workers or lower the node types' min_workers",
}


def _schema_message(e: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = list(e.schema.get("properties", {}))
        unknown = [str(k) for k in e.instance if k not in allowed]
        if unknown:
            near = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"allowed keys: {sorted(allowed)}"
            key = f"{where}.{unknown[0]}" if where else unknown[0]
            return f"cluster config: unknown key {key!r}; {hint}"
    return f"cluster config: {where or 'top level'}: {e.message}; fix this value"


# --- project rules ---------------------------------------------------------------------------


def _check_explicit_keys(cfg: dict[str, Any]) -> None:
    for key, why in (
        ("setup_commands", "Ray's default installs a nightly ray-3.0.0.dev0 wheel"),
        ("head_start_ray_commands", "Ray's default binds the dashboard to 0.0.0.0"),
    ):
        if key not in cfg:
            raise ClusterConfigError(f"cluster config: set {key} explicitly; {why}")
    for name, node_type in (cfg.get("available_node_types") or {}).items():
        node_config = node_type.get("node_config") if isinstance(node_type, dict) else None
        if isinstance(node_config, dict) and not node_config.get("ImageId"):
            raise ClusterConfigError(
                f"cluster config: available_node_types.{name}.node_config.ImageId is not set; "
                "set an AMI id explicitly (Ray's default is an old Ubuntu 18.04 AMI)"
            )


def _check_ray_pin(cfg: dict[str, Any]) -> None:
    pinned = False
    for key in _COMMAND_KEYS:
        for req in _pip_requirements(cfg.get(key) or []):
            if req.name.lower() != "ray":
                continue
            if str(req.specifier) != f"=={RAY_VERSION}" or req.url:
                raise ClusterConfigError(
                    f"cluster config: {key} installs {str(req)!r}; pin it with {_RAY_PIN}"
                )
            missing = [extra for extra in RAY_EXTRAS if extra not in req.extras]
            if missing:
                raise ClusterConfigError(
                    f"cluster config: {key} installs {str(req)!r} without extras {missing}; "
                    f"use {_RAY_PIN}"
                )
            pinned = pinned or key == "setup_commands"
    if not pinned:
        raise ClusterConfigError(
            f"cluster config: setup_commands do not install Ray {RAY_VERSION}; add {_RAY_PIN}"
        )


def _check_dashboard(cfg: dict[str, Any]) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in cfg.get(key) or []:
            if "0.0.0.0" in command:
                raise ClusterConfigError(
                    f"cluster config: {key} binds to 0.0.0.0 ({command.strip()!r}); use "
                    f"--dashboard-host={DASHBOARD_HOST} and reach the dashboard with "
                    "`ray dashboard cluster.yaml`"
                )
    head = [c for c in cfg.get("head_start_ray_commands") or [] if "ray start" in c]
    if not any(_flag_value(c, "--dashboard-host") == DASHBOARD_HOST for c in head):
        raise ClusterConfigError(
            "cluster config: head_start_ray_commands must run `ray start --head ... "
            f"--dashboard-host={DASHBOARD_HOST}` (the dashboard must stay private)"
        )
    if any(str(_flag_value(c, "--include-dashboard")).lower() in ("false", "0") for c in head):
        raise ClusterConfigError(
            "cluster config: head_start_ray_commands disable the dashboard; remove "
            "--include-dashboard=false (Train inside Tune needs the dashboard's State API)"
        )


def _check_project_install(cfg: dict[str, Any]) -> None:
    user = str((cfg.get("auth") or {}).get("ssh_user", "ubuntu"))
    mounts = {_remote_path(p, user) for p in (cfg.get("file_mounts") or {})}
    installed = [
        _remote_path(arg, user)
        for command in cfg.get("setup_commands") or []
        for arg in _pip_editable_args(command)
    ]
    if not any(path in mounts for path in installed):
        raise ClusterConfigError(
            "cluster config: setup_commands must `pip install -e <dir>` where <dir> is a "
            f"file_mounts target holding this project; found file_mounts {sorted(mounts)} and "
            f"editable installs {installed}"
        )


def _check_storage(cfg: dict[str, Any]) -> None:
    pattern = re.compile(rf"export\s+{STORAGE_ENV}=([^\s'\";]*)")
    values = [m for c in cfg.get("setup_commands") or [] for m in pattern.findall(c)]
    if not values or not values[-1]:
        raise ClusterConfigError(
            f"cluster config: setup_commands must export {STORAGE_ENV} on every node, e.g. "
            f"\"echo 'export {STORAGE_ENV}=s3://your-bucket/fusion-orchestrator' >> ~/.bashrc\""
        )
    value = values[-1]
    if not (value.startswith(STORAGE_SCHEMES) or value.startswith("/")):
        raise ClusterConfigError(
            f"cluster config: {STORAGE_ENV}={value!r} in setup_commands is not shared storage; "
            "use s3://bucket/prefix, gs://bucket/prefix or an absolute NFS mount path"
        )


# --- helpers ---------------------------------------------------------------------------------


def _segments(command: str) -> Iterator[list[str]]:
    """Simple shell commands of a command line, split at ;, &&, ||, | (quotes respected)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segment: list[str] = []
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: leave it to the shell to complain
        tokens = command.split()
    for token in tokens:
        if token in _SHELL_OPERATORS:
            yield segment
            segment = []
        else:
            segment.append(token)
    yield segment


def _pip_install_args(command: str) -> Iterator[list[str]]:
    for segment in _segments(command):
        for i in range(len(segment) - 1):
            if segment[i].rsplit("/", 1)[-1] in ("pip", "pip3") and segment[i + 1] == "install":
                yield segment[i + 2 :]
                break


def _pip_requirements(commands: Sequence[str]) -> Iterator[Requirement]:
    for command in commands:
        for args in _pip_install_args(command):
            for arg in args:
                if arg.startswith("-"):
                    continue
                try:
                    yield Requirement(arg)
                except InvalidRequirement:
                    continue


def _pip_editable_args(command: str) -> Iterator[str]:
    for args in _pip_install_args(command):
        for i, arg in enumerate(args):
            if arg in ("-e", "--editable") and i + 1 < len(args):
                yield args[i + 1]
            elif arg.startswith("--editable="):
                yield arg.split("=", 1)[1]


def _remote_path(path: str, user: str) -> str:
    home = f"/home/{user}"
    for prefix in ("~", "$HOME", "${HOME}"):
        if path == prefix or path.startswith(prefix + "/"):
            path = home + path[len(prefix) :]
    return path.rstrip("/") or "/"


def _flag_value(command: str, flag: str) -> str | None:
    match = re.search(rf"{re.escape(flag)}(?:=|\s+)(\S+)", command)
    return match.group(1).strip("'\"") if match else None


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{prefix}[{i}]")
    elif isinstance(node, str):
        yield prefix, node


def main(argv: Sequence[str] | None = None) -> int:
    """Validate one cluster YAML; print ``ok`` (exit 0) or the error (exit 1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m orchestrator.cluster_config CLUSTER_YAML", file=sys.stderr)
        return 2
    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # "setting max workers..."
    try:
        cfg = load_cluster_config(args[0])
        validate_cluster_config(cfg)
    except ClusterConfigError as e:
        print(f"error: {e}")
        return 1
    left = find_placeholders(cfg)
    if left:
        print(f"error: {len(left)} placeholder(s) of the shipped file still to edit before "
              f"`ray up`, first {left[0]}; replace the lines marked EDIT")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
