"""Helpers shared by the on-disk loaders (reid benchmarks, CREMA-D/AVE, manifest).

They exist so every loader reports bad input the same way: a problem with one sample (a file
that does not parse, a missing counterpart, a corrupt image) names the file and what is wrong;
with ``on_error="raise"`` (default) the problems of a split are raised together, with
``on_error="skip"`` the samples are left out, a warning lists them and ``DataBundle.skipped``
counts them. Nothing is dropped silently.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

import numpy as np
import torch

from trainers.data.cache import DatasetCache
from trainers.data.contract import (
    DataError,
    DatasetSpec,
    FileDataset,
    ModalitySpec,
    MultimodalDataset,
    check_modality,
)
from trainers.data.images import normalise_images

OnError = Literal["raise", "skip"]
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
_LISTED = 5  # problems quoted in one message; the rest are counted


def check_choice(field: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise DataError(f"{field} must be one of {list(choices)} but got {value!r}")


def check_size(field: str, size: Sequence[int]) -> tuple[int, int]:
    """An image size (H, W) of two positive ints."""
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise DataError(f"{field} must be (height, width) with two positive ints but got {size!r}")
    return size  # type: ignore[return-value]


def check_fraction(field: str, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise DataError(f"{field} must be strictly between 0 and 1 but got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Record:
    """One sample on disk: where it is read from and its ids (label is the raw id for reid)."""

    files: tuple[Path, ...]
    label: int
    camid: int = -1
    sceneid: int = -1
    row: int = -1  # position in a manifest, for loaders that keep data in memory


class Problems:
    """Problems with individual samples of one split, raised together or counted as skipped."""

    def __init__(self, where: str, on_error: OnError) -> None:
        check_choice("on_error", on_error, ("raise", "skip"))
        self.where = where
        self.on_error = on_error
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)

    def summary(self) -> str:
        shown = "\n  ".join(self.messages[:_LISTED])
        more = len(self.messages) - _LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return f"{self.where}: {len(self.messages)} bad sample(s):\n  {shown}{tail}"

    def resolve(self) -> int:
        """Raise (on_error='raise') or warn and return how many samples were skipped."""
        if not self.messages:
            return 0
        if self.on_error == "raise":
            raise DataError(
                f"{self.summary()}\nFix or remove these files, or pass on_error='skip' to leave "
                "them out (DataBundle.skipped counts them)."
            )
        warnings.warn(f"skipping as asked (on_error='skip'): {self.summary()}", stacklevel=3)
        return len(self.messages)


def listdir_visible(folder: Path) -> list[Path]:
    """Entries of a folder in sorted order, without hidden files such as .DS_Store."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The visible image files of a folder, sorted (``scandir``: no ``stat`` per plain file)."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if not e.name.startswith(".") and e.is_file()
                 and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS]
    return sorted(folder / n for n in names)


def require_dir(path: Path, hint: str) -> Path:
    if not path.is_dir():
        raise DataError(f"folder {path} is missing; {hint}")
    return path


def path_under(root: Path, rel: str, where: str) -> Path:
    """``root / rel``, refusing absolute paths, paths that climb out of ``root`` and paths that
    leave it through a symlink (the resolved path must lie inside the resolved root)."""
    posix = str(rel).replace("\\", "/")
    norm = os.path.normpath(posix) if posix else ""
    if (not posix or PurePosixPath(posix).is_absolute() or PureWindowsPath(rel).drive
            or norm == ".." or norm.startswith("../")):
        raise DataError(
            f"{where}: path {rel!r} is not inside the dataset root {root}; paths must be "
            "relative to the root, without leading '/' or '..'"
        )
    return inside(root, root / norm, where)


def inside(root: Path, path: Path, where: str) -> Path:
    """``path`` when it resolves (symlinks followed) to a place inside ``root``, else a
    DataError: a link inside the dataset must not reach files outside it."""
    return Within(root)(path, where)


class Within:
    """:func:`inside` for the many files of one dataset root: the root and each folder are
    resolved and checked once, and a file that is not itself a symlink lies in its folder,
    so a file costs one ``lstat`` instead of a walk of its whole path (the same answers; for
    RGBNT201's 16,000 files that walk was most of a cache hit's start-up)."""

    def __init__(self, root: Path) -> None:
        self.real_root = root.resolve()
        self.folders: set[str] = set()  # folders found inside the root

    def __call__(self, path: Path, where: str) -> Path:
        folder, name = os.path.split(os.fspath(path))
        if name in ("", ".", "..") or os.path.islink(path):
            self.check(path, Path(path).resolve(), where)
        elif folder not in self.folders:
            real_folder = Path(folder or ".").resolve()
            self.check(path, real_folder / name, where)
            if self.holds(real_folder):  # every plain file of this folder is inside
                self.folders.add(folder)
        return path

    def holds(self, real: Path) -> bool:
        return real == self.real_root or self.real_root in real.parents

    def check(self, path: Path, real: Path, where: str) -> None:
        if not self.holds(real):
            raise DataError(f"{where}: {path} leads to {real}, outside the dataset root "
                            f"{self.real_root} (a symlink?); copy the file into the root instead")


def plain_name(name: str) -> bool:
    """A file or folder name from an annotation file: one path component, not '.' or '..'."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0:")


def check_sample(modalities: Sequence[ModalitySpec], x: Mapping[str, torch.Tensor],
                 record: Record) -> None:
    """The checks FileDataset makes, for screening samples before the split is built."""
    where = record.files[0] if record.files else f"row {record.row}"
    for m in modalities:
        check_modality(m, x.get(m.name), where)


Reader = Callable[..., Mapping[str, torch.Tensor]]  # (record, only=None) -> sample


def screen(records: Sequence[Record], read: Reader, modalities: Sequence[ModalitySpec],
           problems: Problems) -> list[Record]:
    """Read every record once and keep those that load (only used with on_error='skip')."""
    kept = []
    for r in records:
        try:
            check_sample(modalities, read(r), r)
        except DataError as e:
            problems.add(str(e))
            continue
        kept.append(r)
    return kept


class RecordReader:
    """``loader(i)`` for FileDataset; a class (not a lambda) so splits pickle to workers.
    ``loader(i, only)`` reads only the modalities in ``only`` (every reader takes ``only``).
    With ``raw`` (a reader of the same samples as uint8 images), ``loader.raw(i, only)``
    skips the normalisation and ``loader.finish`` applies it to a whole batch: the pipeline
    moves a quarter of the bytes between processes and normalises per batch."""

    reads_subsets = True

    def __init__(self, records: Sequence[Record], read: Reader,
                 raw: Reader | None = None) -> None:
        self.records = list(records)
        self.read = read
        self.raw_read = raw
        self.finish = normalise_images if raw is not None else None

    def raw(self, i: int, only: Sequence[str]) -> Mapping[str, torch.Tensor]:
        assert self.raw_read is not None, "raw() needs a raw reader; check loader.finish"
        return self.raw_read(self.records[i], only=only)

    def __call__(self, i: int, only: Sequence[str] | None = None) -> Mapping[str, torch.Tensor]:
        if only is None:
            return self.read(self.records[i])
        return self.read(self.records[i], only=only)


def make_split(spec: DatasetSpec, split: str, records: Sequence[Record], read: Reader,
               validate: str, cache: DatasetCache | None = None,
               raw: Reader | None = None) -> MultimodalDataset:
    """The split from the cache when there is one (no decoding), else read on demand
    (``raw``: the same reader returning uint8 images, see :class:`RecordReader`)."""
    if cache is not None:
        return cache.dataset_split(spec, split, records)
    return FileDataset(
        spec, split, RecordReader(records, read, raw), [r.label for r in records],
        validate=validate,
        camids=[r.camid for r in records], sceneids=[r.sceneid for r in records],
    )


def usable(records: Sequence[Record], read: Reader, modalities: Sequence[ModalitySpec],
           problems: Problems, validate: str, empty_hint: str,
           cache: DatasetCache | None = None, split: str = "") -> tuple[list[Record], int]:
    """Apply on_error to a split's records: returns the records to keep and the skipped count.

    With on_error='skip' and validate='all' every sample is read once here so corrupt files
    are found and skipped; with validate='first' only problems found while listing the files
    (names, missing counterparts) can be skipped. With a ``cache`` the samples that failed
    when the cache was built are the bad ones (whatever ``validate`` says).
    """
    if cache is not None:
        bad = cache.bad(split, records)
        for i in sorted(bad):
            problems.add(bad[i])
        records = [r for i, r in enumerate(records) if i not in bad]
    elif problems.on_error == "skip" and validate == "all":
        records = screen(records, read, modalities, problems)
    skipped = problems.resolve()
    if not records:
        why = f" (all {skipped} skipped)" if skipped else ""
        raise DataError(f"{problems.where}: no usable samples{why}; {empty_hint}")
    return list(records), skipped


def relabel(ids: Iterable[int]) -> dict[int, int]:
    """Raw identity -> 0..C-1 in sorted order of the raw ids."""
    return {pid: i for i, pid in enumerate(sorted(set(ids)))}


def carve_ids(ids: Iterable[int], fraction: float, seed: int, where: str) -> set[int]:
    """A seeded random ``fraction`` of the distinct ids (at least one; two or more remain)."""
    unique = sorted(set(ids))
    n_val = max(1, round(fraction * len(unique)))
    if len(unique) - n_val < 2:
        raise DataError(
            f"{where}: {len(unique)} train identities are too few to carve "
            f"val_fraction={fraction} of them and keep two for training; lower val_fraction"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in order[:n_val]}


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int) -> list[bool]:
    """A seeded per-class ``fraction`` of the samples (round, at least one when a class has
    two or more), returned as a mask; keeps the class balance of the source split."""
    rng = np.random.default_rng(seed)
    mask = [False] * len(labels)
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        n = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        for i in rng.permutation(idx)[:n]:
            mask[int(i)] = True
    return mask
