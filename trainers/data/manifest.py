"""``"manifest"``: bring any dataset as one Parquet table, without writing code.

The table has one row per sample:

- ``split`` (string): train / val / test (classification) or train / val / query / gallery
  (reid);
- ``label`` (int): the class (classification, 0..num_classes-1) or the identity (reid: any
  int; train identities are relabelled 0..C-1 in sorted order, the other splits keep them);
- ``camid``, ``sceneid`` (int, optional; null -> -1);
- per declared modality ``m`` exactly one of
  ``m_path`` (string): a file relative to the dataset root (``.npy`` holding exactly the
  declared shape, or ``.jpg``/``.jpeg``/``.png``/``.bmp`` for an image modality of 1 or 3
  channels, resized to the declared (H, W), scaled to [0, 1] and normalised), or
  ``m`` (list of numbers): the sample's values flattened in C order, reshaped to the
  declared shape.

Other columns are ignored (keep ids, notes...), except ``<x>_path`` columns of undeclared
modalities, which are an error (a typo would otherwise go unnoticed).

The dataset is declared in JSON, either in the Parquet key-value metadata under the key
``dataset`` or in a ``dataset.json`` file in the root (both: they must agree)::

    {"name": "my_set", "task": "classification", "class_names": ["cat", "dog"],
     "modalities": [{"name": "rgb", "kind": "image", "shape": [3, 64, 64]},
                    {"name": "audio", "kind": "sequence", "shape": [100, 40]}],
     "recipe": "how the files were made", "version": "2"}

Keys: ``task`` and ``modalities`` (in canonical order; ``kind`` image (C, H, W), vector (D,)
or sequence (T, D); images may add ``mean``/``std`` lists, default ImageNet for 3 channels
and 0.449/0.226 for 1) are required; classification needs ``class_names`` or
``num_classes``, reid takes neither (its classes are the train identities); ``name``
(letters, digits, ``_``, ``-``, ``.``; default: the root folder's name with other characters
replaced by ``_``), ``recipe`` and ``version`` are optional. Unknown keys are
errors. Paths escaping the root (absolute, climbing out with ``..``, or leaving it through a
symlink) are always an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from trainers.data import register_dataset
from trainers.data.arrays import load_array
from trainers.data.contract import (
    SAFE_NAME,
    DataBundle,
    DataError,
    DatasetSpec,
    ModalitySpec,
    MultimodalDataset,
    TensorDataset,
)
from trainers.data.images import decode_image, image_tensor
from trainers.data.loading import (
    IMAGE_EXTS,
    OnError,
    Problems,
    Record,
    check_choice,
    make_split,
    path_under,
    relabel,
    screen,
)

_KEYS = {"name", "task", "modalities", "class_names", "num_classes", "recipe", "version"}
_MODALITY_KEYS = {"name", "kind", "shape", "mean", "std"}
Norm = tuple[tuple[float, ...], tuple[float, ...]] | None


@dataclass(frozen=True)
class Declaration:
    """The parsed JSON declaration (classes are resolved later for reid)."""

    name: str
    task: str
    modalities: tuple[ModalitySpec, ...]
    norms: Mapping[str, Norm]
    class_names: tuple[str, ...]
    num_classes: int
    recipe: str
    version: str


# ---- the declaration -----------------------------------------------------------------------

def read_declaration(root: Path, table_path: Path, metadata: Mapping[bytes, bytes] | None
                     ) -> dict[str, Any]:
    """The JSON from the Parquet metadata key 'dataset' and/or ``root/dataset.json``."""
    found = {}
    if metadata and b"dataset" in metadata:
        found[f"{table_path} metadata 'dataset'"] = metadata[b"dataset"].decode()
    sidecar = root / "dataset.json"
    if sidecar.is_file():
        found[str(sidecar)] = sidecar.read_text(encoding="utf-8")
    if not found:
        raise DataError(f"{table_path}: no dataset declaration; write {sidecar} or store the "
                        "JSON under the Parquet metadata key 'dataset' (docs/datasets.md)")
    parsed = {}
    for where, text in found.items():
        try:
            parsed[where] = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(parsed[where], dict):
            raise DataError(f"{where}: must be a JSON object")
    first, *rest = parsed.values()
    if any(other != first for other in rest):
        raise DataError(f"{' and '.join(parsed)} declare different datasets; keep one")
    return first


def _unknown(keys: set[str], allowed: set[str], where: str) -> None:
    extra = sorted(keys - allowed)
    if extra:
        raise DataError(f"{where}: unknown key {extra[0]!r}; allowed keys: {sorted(allowed)}")


def parse_modality(d: Any, where: str) -> tuple[ModalitySpec, Norm]:
    if not isinstance(d, dict) or not {"name", "kind", "shape"} <= set(d):
        raise DataError(f"{where}: each modality needs 'name', 'kind' and 'shape' but got {d!r}")
    _unknown(set(d), _MODALITY_KEYS, f"{where} modality {d.get('name')!r}")
    spec = ModalitySpec(d["name"], d["kind"], _shape(d["shape"], f"{where} modality "
                                                             f"{d['name']!r}"))
    if ("mean" in d or "std" in d) and spec.kind != "image":
        raise DataError(f"{where}: 'mean'/'std' only apply to image modalities ({spec.name!r} "
                        f"is {spec.kind})")
    norm = None
    if "mean" in d or "std" in d:
        mean, std = tuple(d.get("mean", ())), tuple(d.get("std", ()))
        if len(mean) != spec.channels or len(std) != spec.channels or min(std) <= 0:
            raise DataError(f"{where}: modality {spec.name!r} needs 'mean' and 'std' with "
                            f"{spec.channels} values (std > 0) but got {mean} / {std}")
        norm = (mean, std)
    return spec, norm


def _shape(value: Any, where: str) -> tuple[int, ...]:
    """A declared shape: a list of positive integers (a string or a float is an error)."""
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value)):
        raise DataError(f"{where}: 'shape' must be a list of positive integers, e.g. [3, 64, 64], "
                        f"but got {value!r}")
    return tuple(value)


def parse_declaration(d: dict[str, Any], root: Path, where: str) -> Declaration:
    _unknown(set(d), _KEYS, where)
    for key in ("task", "modalities"):
        if key not in d:
            raise DataError(f"{where}: missing key {key!r}")
    check_choice(f"{where}: task", d["task"], ("classification", "reid"))
    if not isinstance(d["modalities"], list) or not d["modalities"]:
        raise DataError(f"{where}: 'modalities' must be a non-empty list")
    parsed = [parse_modality(m, where) for m in d["modalities"]]
    names = tuple(d.get("class_names", ()))
    num = int(d.get("num_classes", len(names)))
    if d["task"] == "reid" and ("class_names" in d or "num_classes" in d):
        raise DataError(f"{where}: a reid dataset's classes are its train identities; remove "
                        "'class_names'/'num_classes'")
    if d["task"] == "classification" and num < 2:
        raise DataError(f"{where}: classification needs 'class_names' or 'num_classes' >= 2")
    return Declaration(dataset_name(d, root, where), d["task"],
                       tuple(m for m, _ in parsed), {m.name: n for m, n in parsed},
                       names, num, str(d.get("recipe", "")), str(d.get("version", "1")))


def dataset_name(d: dict[str, Any], root: Path, where: str) -> str:
    """The declared ``name`` (it names run folders: a path is an error), else the root folder's
    name made safe (characters other than letters, digits, '_', '-', '.' become '_')."""
    if "name" not in d:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", root.resolve().name).lstrip("._-")
        return safe or "manifest"
    name = d["name"]
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise DataError(f"{where}: 'name' must be letters, digits, '_', '-' or '.' (not first) "
                        f"but got {name!r}; it names run folders, so it cannot hold a path")
    return name


# ---- the table -----------------------------------------------------------------------------

def check_columns(table: pa.Table, decl: Declaration, where: str) -> dict[str, str]:
    """Which column holds each modality: 'path' or 'inline'."""
    cols = set(table.column_names)
    missing = [c for c in ("split", "label") if c not in cols]
    how = {}
    for m in decl.modalities:
        has_path, has_inline = f"{m.name}_path" in cols, m.name in cols
        if has_path and has_inline:
            raise DataError(f"{where}: modality {m.name!r} has both columns {m.name!r} and "
                            f"'{m.name}_path'; keep one")
        if not (has_path or has_inline):
            missing.append(f"{m.name}_path (or {m.name})")
        how[m.name] = "path" if has_path else "inline"
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; the table has "
                        f"{sorted(cols)}")
    declared = {f"{m.name}_path" for m in decl.modalities}
    stray = sorted(c for c in cols if c.endswith("_path") and c not in declared)
    if stray:
        raise DataError(f"{where}: column {stray[0]!r} names a modality that is not declared; "
                        f"declared: {[m.name for m in decl.modalities]}")
    return how


def int_column(table: pa.Table, name: str, where: str, default: int | None) -> list[int]:
    if name not in table.column_names:
        return [-1] * table.num_rows
    values = table.column(name).to_pylist()
    out = []
    for i, v in enumerate(values):
        if v is None and default is None:
            raise DataError(f"{where} row {i}: {name} is null")
        integral = isinstance(v, int) or (isinstance(v, float) and v.is_integer())
        if v is not None and (isinstance(v, bool) or not integral):
            raise DataError(f"{where} row {i}: {name} {v!r} is not an integer")
        out.append(default if v is None else int(v))
    return out


def inline_values(table: pa.Table, m: ModalitySpec, where: str,
                  problems: Problems) -> tuple[torch.Tensor, set[int]]:
    """(N, *shape) tensor of a list column and the rows that are bad (counted as problems)."""
    col = table.column(m.name).combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            or pa.types.is_fixed_size_list(col.type)):
        raise DataError(f"{where}: column {m.name!r} must hold lists of numbers, not {col.type}")
    numel = int(np.prod(m.shape))
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    try:
        flat = col.flatten().cast(pa.float32()).to_numpy(zero_copy_only=False)
    except pa.ArrowException as e:
        raise DataError(f"{where}: column {m.name!r} must hold flat lists of numbers, not "
                        f"{col.type} ({e})") from e
    out = np.zeros((len(col), numel), dtype=np.float32)
    bad, start = set(), 0
    for i, n in enumerate(lengths):
        n = 0 if np.isnan(n) else int(n)
        values = flat[start:start + n]
        start += n
        if n != numel or not np.isfinite(values).all():
            why = (f"has {n} values, expected {numel} for shape {m.shape}" if n != numel
                   else "contains NaN, inf or null")
            problems.add(f"{where} row {i}: column {m.name!r} {why}")
            bad.add(i)
            continue
        out[i] = values
    return torch.from_numpy(out).reshape(len(col), *m.shape), bad


def read_file(path: Path, m: ModalitySpec, norm: Norm) -> torch.Tensor:
    ext = path.suffix.lower()
    if ext == ".npy":
        arr = load_array(path)
        if tuple(arr.shape) != m.shape:
            raise DataError(f"{path}: array has shape {tuple(arr.shape)}, modality {m.name!r} "
                            f"declares {m.shape}")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if ext in IMAGE_EXTS:
        if m.kind != "image" or m.channels not in (1, 3):
            raise DataError(f"{path}: an image file for modality {m.name!r} ({m.kind} "
                            f"{m.shape}); images need an image modality of 1 or 3 channels")
        mean, std = norm if norm else (None, None)
        return image_tensor(decode_image(path), m.shape[1:], m.channels, mean, std)
    raise DataError(f"{path}: unsupported file type {ext!r} for modality {m.name!r}; use .npy "
                    f"or one of {list(IMAGE_EXTS)}")


def read_row(record: Record, files: Sequence[ModalitySpec], norms: Mapping[str, Norm],
             inline: Mapping[str, torch.Tensor],
             only: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    x = {m.name: read_file(p, m, norms[m.name])
         for m, p in zip(files, record.files, strict=True) if only is None or m.name in only}
    x.update({name: t[record.row] for name, t in inline.items() if only is None or name in only})
    return x


# ---- assembling the bundle -----------------------------------------------------------------

def row_records(table: pa.Table, root: Path, decl: Declaration, how: Mapping[str, str],
                where: str, problems: Problems, bad_rows: set[int]) -> dict[str, list[Record]]:
    """Records per split; row problems (unknown split, missing file, label range) counted."""
    splits = ("train", "val", "test") if decl.task == "classification" else (
        "train", "val", "query", "gallery")
    out: dict[str, list[Record]] = {s: [] for s in splits}
    labels = int_column(table, "label", where, None)
    camids = int_column(table, "camid", where, -1)
    sceneids = int_column(table, "sceneid", where, -1)
    path_cols = {m: table.column(f"{m}_path").to_pylist() for m, h in how.items() if h == "path"}
    for i, split in enumerate(table.column("split").to_pylist()):
        if i in bad_rows:
            continue
        at = f"{where} row {i}"
        if split not in out:
            problems.add(f"{at}: split {split!r} is not one of {list(splits)}")
            continue
        if decl.task == "classification" and not 0 <= labels[i] < decl.num_classes:
            problems.add(f"{at}: label {labels[i]} is outside [0, {decl.num_classes})")
            continue
        files = []
        for m, col in path_cols.items():
            if col[i] is None:
                problems.add(f"{at}: {m}_path is null")
                break
            p = path_under(root, col[i], f"{at} ({m}_path)")
            if not p.is_file():
                problems.add(f"{at}: {m}_path file {p} does not exist")
                break
            files.append(p)
        else:
            out[split].append(Record(tuple(files), labels[i], camids[i], sceneids[i], row=i))
    return out


def check_disjoint(records: Mapping[str, list[Record]], where: str) -> None:
    """Reid protocol: no identity of train appears in val, query or gallery; val and test
    identities are disjoint too (query and gallery share theirs)."""
    ids = {s: {r.label for r in rs} for s, rs in records.items()}
    test = ids["query"] | ids["gallery"]
    for a, b, other in (("train", "val", ids["val"]), ("train", "query/gallery", test),
                        ("val", "query/gallery", test)):
        both = sorted(ids[a] & other)
        if both:
            raise DataError(f"{where}: identity {both[0]} is in split {a!r} and in {b} "
                            f"({len(both)} shared); reid splits must not share identities")


def build_spec(decl: Declaration, records: Mapping[str, list[Record]]) -> DatasetSpec:
    num = decl.num_classes
    if decl.task == "reid":
        num = len({r.label for r in records["train"]})
    return DatasetSpec(decl.name, decl.task, decl.modalities, num, decl.class_names,
                       decl.recipe, decl.version)


def make_dataset(spec: DatasetSpec, split: str, records: Sequence[Record], read: partial,
                 inline: Mapping[str, torch.Tensor], validate: str) -> MultimodalDataset:
    """In memory when no modality is read from files (fast batches), else from disk."""
    if len(inline) < len(spec.modalities):
        return make_split(spec, split, records, read, validate)
    rows = torch.tensor([r.row for r in records], dtype=torch.long)
    return TensorDataset(spec, split, {m: t[rows] for m, t in inline.items()},
                         [r.label for r in records], camids=[r.camid for r in records],
                         sceneids=[r.sceneid for r in records])


def load_table(root: Path, table: str | Path) -> tuple[pa.Table, Declaration, str]:
    table_path = Path(table) if Path(table).is_absolute() else root / table
    where = f"manifest {table_path}"
    if not table_path.is_file():
        raise DataError(f"{where} does not exist")
    try:
        data = pq.read_table(table_path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{where}: cannot read Parquet ({e})") from e
    decl = parse_declaration(read_declaration(root, table_path, data.schema.metadata),
                             root, where)
    return data, decl, where


@register_dataset("manifest")
def manifest(root: str | Path, table: str | Path = "manifest.parquet",
             on_error: OnError = "raise", validate: str = "all") -> DataBundle:
    """A dataset described by a Parquet table under ``root`` (format: module docstring).

    ``table`` is relative to ``root`` (or absolute); per-row paths are always relative to root.
    """
    check_choice("on_error", on_error, ("raise", "skip"))
    check_choice("validate", validate, ("all", "first"))
    root = Path(root)
    data, decl, where = load_table(root, table)
    how = check_columns(data, decl, where)
    problems = Problems(where, on_error)
    inline, bad = {}, set()
    for m in decl.modalities:
        if how[m.name] == "inline":
            inline[m.name], rows = inline_values(data, m, where, problems)
            bad |= rows
    records = row_records(data, root, decl, how, where, problems, bad)
    files = tuple(m for m in decl.modalities if how[m.name] == "path")
    read = partial(read_row, files=files, norms=decl.norms, inline=inline)
    if on_error == "skip" and validate == "all" and files:
        records = {s: screen(rs, read, decl.modalities, problems) for s, rs in records.items()}
    skipped = problems.resolve()
    for split, rs in records.items():
        if not rs:
            raise DataError(f"{where}: no usable rows with split {split!r}; a {decl.task} "
                            f"dataset needs rows for each of {list(records)}")
    if decl.task == "reid":
        check_disjoint(records, where)
        to_label = relabel(r.label for r in records["train"])
        records["train"] = [replace(r, label=to_label[r.label]) for r in records["train"]]
    spec = build_spec(decl, records)
    splits = {s: make_dataset(spec, s, rs, read, inline, validate) for s, rs in records.items()}
    sources = tuple(p for p in (root / table, root / "dataset.json") if p.is_file())
    return DataBundle(spec, splits, skipped=skipped, sources=sources)
