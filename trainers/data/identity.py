"""What data a run was trained on: the dataset's identity, part of every run's name.

identity = registered name + factory arguments (defaults filled in, numbers canonical, so
``noise=0.1`` given explicitly equals the default) + a fingerprint of what was loaded:

- in-memory splits: a hash of every tensor, the labels and the ids;
- file-backed splits: the file list relative to the dataset's top folder with each file's
  size (a folder, such as a clip's frames, contributes its image files' names and sizes), the
  labels and ids, and the bytes of the files that describe the data (``DataBundle.sources``:
  a manifest table, a split list). Images are not read again: it costs a ``stat`` per file;
- always: the spec (modalities, classes, version; not the recipe, a description that can
  spell one argument two ways, ``noise=1`` / ``noise=1.0``).

When the fingerprint covers the content (all splits in memory or read through the loaders'
record lists), the arguments that only say WHERE the files are (``root``, ``table``, ``path``)
or how thoroughly they are checked (``validate``) are left out of the identity, so a dataset
moved to another folder or machine keeps its runs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # contract imports this module
    from trainers.data.contract import DatasetSpec, MultimodalDataset

LOCATION_ARGS = ("root", "table", "path")  # where the data is, not what it is
NOT_CONTENT_ARGS = ("validate",)  # how much of it is checked at load time
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def canonical(value: Any) -> Any:
    """JSON-ready value with integral floats as ints, tuples as lists, paths as strings."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


def factory_arguments(factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Every argument of ``factory`` as it will run: given ones and the defaults, canonical."""
    sig = inspect.signature(factory)
    bound = sig.bind_partial(**kwargs)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return canonical(out)


def _records(ds: MultimodalDataset) -> Sequence[Any] | None:
    """The record list of a split read from files (loading.RecordReader), else None."""
    return getattr(getattr(ds, "loader", None), "records", None)


def _tensors(ds: MultimodalDataset) -> Mapping[str, torch.Tensor] | None:
    """The tensors of an in-memory split (contract.TensorDataset), else None."""
    return getattr(ds, "tensors", None)


def covers_content(splits: Mapping[str, MultimodalDataset]) -> bool:
    """Whether the fingerprint sees every sample's data (in memory) or file list."""
    return all(_tensors(ds) is not None or _records(ds) is not None for ds in splits.values())


def dataset_identity(name: str, args: Mapping[str, Any], fingerprint: str,
                     drop_locations: bool) -> str:
    """The identity as canonical JSON text (what run names hash)."""
    left_out = (*LOCATION_ARGS, *NOT_CONTENT_ARGS) if drop_locations else ()
    kept = {k: v for k, v in args.items() if k not in left_out}
    return json.dumps({"dataset": name, "args": kept, "fingerprint": fingerprint},
                      sort_keys=True)


def fingerprinted(spec: DatasetSpec, splits: Mapping[str, MultimodalDataset],
                  sources: Sequence[str | Path] = ()) -> DatasetSpec:
    """``spec`` with its fingerprint and a provisional identity (name + fingerprint; a bundle
    made by ``create_dataset`` gets its registered name and arguments added)."""
    fp = fingerprint(spec, splits, sources)
    return replace(spec, fingerprint=fp,
                   identity=dataset_identity(spec.name, {}, fp, drop_locations=True))


def fingerprint(spec: DatasetSpec, splits: Mapping[str, MultimodalDataset],
                sources: Sequence[str | Path] = ()) -> str:
    """A 16-hex-digit hash of what was loaded (see the module docstring)."""
    h = hashlib.sha256()

    def put(*parts: object) -> None:
        h.update(json.dumps([str(p) for p in parts]).encode())

    put(spec.name, spec.task, [(m.name, m.kind, m.shape) for m in spec.modalities],
        spec.num_classes, spec.class_names, spec.version)
    files = [os.path.abspath(f) for ds in splits.values() for r in _records(ds) or ()
             for f in r.files] + [os.path.abspath(s) for s in sources]
    top = _top(files)
    for split in sorted(splits):
        ds = splits[split]
        put("split", split, len(ds))
        for t in (ds.labels, ds.camids, ds.sceneids):
            h.update(tensor_bytes(t))
        tensors = _tensors(ds) or {}
        for m in sorted(tensors):
            put(m, tuple(tensors[m].shape), tensors[m].dtype)
            h.update(tensor_bytes(tensors[m]))
        for r in _records(ds) or ():
            put(*(_file_entry(f, top) for f in r.files))
    for s in sources:
        put("source", os.path.relpath(os.path.abspath(s), top))
        h.update(hashlib.sha256(Path(s).read_bytes()).digest())
    return h.hexdigest()[:16]


def _top(files: Sequence[str]) -> str:
    """The deepest folder holding every file: paths below it do not depend on where the
    dataset lies."""
    if not files:
        return ""
    common = os.path.commonpath(files)
    return common if os.path.isdir(common) else os.path.dirname(common)


def _file_entry(path: str | Path, top: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), top)
    p = Path(path)
    if p.is_dir():
        listed = sorted((c.name, c.stat().st_size) for c in p.iterdir()
                        if c.suffix.lower() in IMAGE_EXTS and not c.name.startswith("."))
        return f"{rel}/{listed}"
    return f"{rel}:{p.stat().st_size}"


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()
