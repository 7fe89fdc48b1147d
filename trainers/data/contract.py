"""The data contract every dataset in the project follows.

A sample is a mapping modality -> tensor plus an integer label (and, for re-identification,
a camera id and optionally a scene id). A dataset declares its modalities (name, kind, shape),
its task and its classes in a :class:`DatasetSpec`; every split is validated against that spec
when it is built, so a bad file or a wrong shape fails at construction with a message that
names the sample and the field, never halfway through training.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from trainers.data.identity import fingerprinted

ModalityKind = Literal["image", "vector", "sequence"]
Task = Literal["classification", "reid"]
KIND_RANK = {"image": 3, "vector": 1, "sequence": 2}
CLASSIFICATION_SPLITS = ("train", "val", "test")
REID_SPLITS = ("train", "val", "query", "gallery")
# A dataset name becomes part of run folder names: one path component, never '.', '..' or '/'.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class DataError(ValueError):
    """Raised when a dataset does not match its declared spec."""


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: ``image`` is (C, H, W), ``vector`` is (D,), ``sequence`` is (T, D)."""

    name: str
    kind: ModalityKind
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise DataError(
                f"ModalitySpec.name must be a non-empty identifier but got {self.name!r}; "
                "use letters, digits and '_'"
            )
        if self.kind not in KIND_RANK:
            raise DataError(
                f"ModalitySpec.kind of {self.name!r} must be one of {sorted(KIND_RANK)} "
                f"but got {self.kind!r}"
            )
        shape = tuple(self.shape)
        object.__setattr__(self, "shape", shape)
        if len(shape) != KIND_RANK[self.kind] or any(int(s) <= 0 for s in shape):
            raise DataError(
                f"ModalitySpec.shape of {self.name!r} ({self.kind}) must have "
                f"{KIND_RANK[self.kind]} positive dims but got {shape}"
            )

    @property
    def channels(self) -> int:
        """Input channels for an image encoder, feature size for vectors and sequences."""
        return self.shape[0] if self.kind == "image" else self.shape[-1]


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset holds: task, modalities in their canonical order, classes."""

    name: str
    task: Task
    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    class_names: tuple[str, ...] = ()
    recipe: str = ""
    version: str = "1"
    # What was loaded (set by DataBundle, from its splits) and the identity run names use (set
    # by create_dataset: registered name + arguments + fingerprint); trainers.data.identity.
    fingerprint: str = field(default="", compare=False)
    identity: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SAFE_NAME.fullmatch(self.name):
            raise DataError(
                f"DatasetSpec.name must be letters, digits, '_', '-' or '.' (not first) but got "
                f"{self.name!r}; it names run folders, so it cannot hold a path"
            )
        if self.task not in ("classification", "reid"):
            raise DataError(
                f"DatasetSpec.task must be 'classification' or 'reid' but got {self.task!r}"
            )
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if not self.modalities:
            raise DataError(f"DatasetSpec.modalities of {self.name!r} is empty; declare one")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise DataError(f"DatasetSpec.modalities has duplicate names: {names}")
        if self.num_classes < 2:
            raise DataError(
                f"DatasetSpec.num_classes must be >= 2 but got {self.num_classes}"
            )
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.class_names and len(self.class_names) != self.num_classes:
            raise DataError(
                f"DatasetSpec.class_names has {len(self.class_names)} names but "
                f"num_classes is {self.num_classes}"
            )

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def modality(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise DataError(
            f"dataset {self.name!r} has no modality {name!r}; it has {list(self.modality_names)}"
        )

    @property
    def split_names(self) -> tuple[str, ...]:
        return CLASSIFICATION_SPLITS if self.task == "classification" else REID_SPLITS


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf in ``t``; integer tensors (uint8 images) cannot hold any: not scanned."""
    return not t.is_floating_point() and not t.is_complex() or bool(torch.isfinite(t).all())


def check_modality(m: ModalitySpec, t: object, where: object) -> torch.Tensor:
    """Modality ``m`` of one sample read from a file, for the loaders' screening and the
    cache's build: a tensor of the declared shape without NaN or inf, else a DataError that
    names ``where`` (the file)."""
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != m.shape:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise DataError(f"{where}: modality {m.name!r} is {got}, expected {m.shape}")
    if not all_finite(t):
        raise DataError(f"{where}: modality {m.name!r} contains NaN or inf")
    return t


def _check_tensor(spec: ModalitySpec, value: object, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{where}: modality {spec.name!r} is {type(value).__name__}, not a tensor")
    if tuple(value.shape) != spec.shape:
        raise DataError(
            f"{where}: modality {spec.name!r} has shape {tuple(value.shape)}, "
            f"expected {spec.shape}"
        )
    if not all_finite(value):
        raise DataError(f"{where}: modality {spec.name!r} contains NaN or inf")
    return value


class MultimodalDataset(torch.utils.data.Dataset):
    """A validated split. Subclasses provide ``_load(i)``; validation happens at build time.

    Items are dicts ``{"x": {modality: tensor}, "y": int, "camid": int, "sceneid": int,
    "index": int}`` (camid and sceneid are -1 when the dataset has none). ``augment`` (train
    split only) and ``num_workers`` are set by ``trainers.data.pipeline.configure``.
    """

    augment: object = None
    num_workers: int | None = None

    def __init__(self, spec: DatasetSpec, split: str, labels: Sequence[int] | torch.Tensor,
                 camids: Sequence[int] | torch.Tensor | None = None,
                 sceneids: Sequence[int] | torch.Tensor | None = None) -> None:
        self.spec = spec
        self.split = split
        self.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        n = len(self.labels)
        self.camids = _ids(camids, n, "camids", spec, split)
        self.sceneids = _ids(sceneids, n, "sceneids", spec, split)
        if n == 0:
            raise DataError(
                f"dataset {spec.name!r}: split {split!r} is empty; every split needs samples"
            )
        bad = ((self.labels < 0) | (self.labels >= spec.num_classes)).nonzero()
        if len(bad) and spec.task == "classification":
            i = int(bad[0])
            raise DataError(
                f"dataset {spec.name!r} split {split!r} sample {i}: label "
                f"{int(self.labels[i])} is outside [0, {spec.num_classes})"
            )
        if len(bad) and spec.task == "reid" and split == "train":
            i = int(bad[0])
            raise DataError(
                f"dataset {spec.name!r} split {split!r} sample {i}: identity label "
                f"{int(self.labels[i])} is outside [0, {spec.num_classes}) of the train ids"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def _load(self, i: int) -> Mapping[str, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        return self.get(i)

    def get(self, i: int, modalities: Sequence[str] | None = None) -> dict:
        """Sample ``i`` with only ``modalities`` (default: all) in ``x``."""
        return self.item(i, self._load_some(i, modalities))

    def item(self, i: int, x: Mapping[str, torch.Tensor]) -> dict:
        """Sample ``i``'s dict around its already loaded modalities ``x``."""
        return {"x": dict(x), "y": int(self.labels[i]), "camid": int(self.camids[i]),
                "sceneid": int(self.sceneids[i]), "index": i}

    def _load_some(self, i: int, modalities: Sequence[str] | None) -> Mapping[str, torch.Tensor]:
        x = self._load(i)
        return x if modalities is None else {m: x[m] for m in modalities}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_feeds"}  # no worker handles

    def validate_sample(self, i: int, x: Mapping[str, object],
                        modalities: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Check one loaded sample against the spec; errors name the sample and the field."""
        where = f"dataset {self.spec.name!r} split {self.split!r} sample {i}"
        wanted = self.spec.modality_names if modalities is None else tuple(modalities)
        missing = [m for m in wanted if m not in x]
        if missing:
            raise DataError(f"{where}: modality {missing[0]!r} is missing")
        extra = [k for k in x if k not in wanted]
        if extra:
            raise DataError(f"{where}: unknown modality {extra[0]!r}")
        return {m: _check_tensor(self.spec.modality(m), x[m], where) for m in wanted}


def _ids(values: Sequence[int] | torch.Tensor | None, n: int, name: str,
         spec: DatasetSpec, split: str) -> torch.Tensor:
    if values is None:
        return torch.full((n,), -1, dtype=torch.long)
    t = torch.as_tensor(values, dtype=torch.long).reshape(-1)
    if len(t) != n:
        raise DataError(
            f"dataset {spec.name!r} split {split!r}: {name} has {len(t)} entries for {n} labels"
        )
    return t


class TensorDataset(MultimodalDataset):
    """A split held in memory as one tensor per modality, shape (N, *modality.shape)."""

    def __init__(self, spec: DatasetSpec, split: str, tensors: Mapping[str, torch.Tensor],
                 labels: Sequence[int] | torch.Tensor, **ids: Sequence[int] | None) -> None:
        super().__init__(spec, split, labels, **ids)
        n = len(self.labels)
        where = f"dataset {spec.name!r} split {split!r}"
        for m in spec.modalities:
            if m.name not in tensors:
                raise DataError(f"{where}: modality {m.name!r} is missing")
            t = tensors[m.name]
            if tuple(t.shape[1:]) != m.shape or t.shape[0] != n:
                raise DataError(
                    f"{where}: modality {m.name!r} has shape {tuple(t.shape)}, expected "
                    f"({n}, {', '.join(map(str, m.shape))})"
                )
            finite = torch.isfinite(t.reshape(n, -1)).all(dim=1)
            if not finite.all():
                i = int((~finite).nonzero()[0])
                raise DataError(f"{where} sample {i}: modality {m.name!r} contains NaN or inf")
        extra = sorted(set(tensors) - set(spec.modality_names))
        if extra:
            raise DataError(f"{where}: unknown modality {extra[0]!r}; spec has "
                            f"{list(spec.modality_names)}")
        self.tensors = {m: tensors[m].float().contiguous() for m in spec.modality_names}

    def _load(self, i: int) -> Mapping[str, torch.Tensor]:
        return {m: t[i] for m, t in self.tensors.items()}

    def batch(self, idx: torch.Tensor) -> dict:
        """Fast path: gather a batch by index without per-sample Python work."""
        return {"x": {m: t[idx] for m, t in self.tensors.items()}, "y": self.labels[idx],
                "camid": self.camids[idx], "sceneid": self.sceneids[idx], "index": idx}


class FileDataset(MultimodalDataset):
    """A split whose samples are read on demand by ``loader(i) -> {modality: tensor}``.

    With ``validate="all"`` (default) every sample is loaded once at construction so a corrupt
    or mis-shaped file fails immediately; ``"first"`` checks one sample (large datasets).
    A loader with ``reads_subsets = True`` is called ``loader(i, only)`` to read only the
    modalities in ``only`` (the pipeline's unimodal jobs).
    """

    def __init__(self, spec: DatasetSpec, split: str,
                 loader: Callable[[int], Mapping[str, torch.Tensor]],
                 labels: Sequence[int] | torch.Tensor, validate: str = "all",
                 **ids: Sequence[int] | None) -> None:
        super().__init__(spec, split, labels, **ids)
        if validate not in ("all", "first"):
            raise DataError(f"FileDataset.validate must be 'all' or 'first' but got {validate!r}")
        self.loader = loader
        for i in range(len(self) if validate == "all" else 1):
            self._load(i)

    def _load(self, i: int) -> Mapping[str, torch.Tensor]:
        return self.validate_sample(i, self.loader(i))

    def _load_some(self, i: int, modalities: Sequence[str] | None) -> Mapping[str, torch.Tensor]:
        if modalities is None or not getattr(self.loader, "reads_subsets", False):
            return super()._load_some(i, modalities)
        return self.validate_sample(i, self.loader(i, tuple(modalities)), modalities)


@dataclass(frozen=True)
class DataBundle:
    """A dataset's spec and its validated splits (train/val/test or train/val/query/gallery)."""

    spec: DatasetSpec
    splits: Mapping[str, MultimodalDataset] = field(default_factory=dict)
    skipped: int = 0  # samples a loader skipped because the user asked it to (on_error="skip")
    sources: tuple[str | Path, ...] = ()  # files describing the data (a manifest, split lists)

    def __post_init__(self) -> None:
        missing = [s for s in self.spec.split_names if s not in self.splits]
        if missing:
            raise DataError(
                f"dataset {self.spec.name!r} ({self.spec.task}) is missing split {missing[0]!r}; "
                f"it needs {list(self.spec.split_names)}"
            )
        for name, ds in self.splits.items():
            if ds.spec != self.spec:
                raise DataError(f"dataset {self.spec.name!r}: split {name!r} has another spec")
        # fingerprinted once per bundle, never taken over from a spec of other splits
        object.__setattr__(self, "spec", fingerprinted(self.spec, self.splits, self.sources))

    def with_identity(self, identity: str) -> DataBundle:
        """This bundle with ``spec.identity`` set (``create_dataset``: registered name +
        arguments + fingerprint), without fingerprinting it again."""
        out = copy.copy(self)
        object.__setattr__(out, "spec", replace(self.spec, identity=identity))
        return out

    def __getitem__(self, split: str) -> MultimodalDataset:
        if split not in self.splits:
            raise DataError(
                f"dataset {self.spec.name!r} has no split {split!r}; it has {list(self.splits)}"
            )
        return self.splits[split]


def collate(items: Sequence[dict]) -> dict:
    """Stack a list of samples into a batch with the same keys as ``TensorDataset.batch``."""
    keys = items[0]["x"].keys()
    return {
        "x": {m: torch.stack([it["x"][m] for it in items]) for m in keys},
        "y": torch.tensor([it["y"] for it in items], dtype=torch.long),
        "camid": torch.tensor([it["camid"] for it in items], dtype=torch.long),
        "sceneid": torch.tensor([it["sceneid"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


def iterate_batches(ds: MultimodalDataset, batch_size: int, shuffle: bool = False,
                    generator: torch.Generator | None = None,
                    batches: Sequence[Sequence[int]] | None = None,
                    modalities: Sequence[str] | None = None,
                    augment_seed: int | None = None) -> Iterator[dict]:
    """Yield batches of ``ds``; ``batches`` (index lists, e.g. from a P x K sampler) overrides
    ``batch_size``/``shuffle``. ``modalities``: read only these; ``augment_seed`` (training
    only): apply the split's augmentation recipe. Made by ``trainers.data.pipeline``:
    in-memory datasets are gathered by index, files decoded in worker processes."""
    from trainers.data.pipeline import stream

    if batches is None:
        order = torch.randperm(len(ds), generator=generator) if shuffle else torch.arange(len(ds))
        batches = [order[i:i + batch_size] for i in range(0, len(ds), batch_size)]
    return stream(ds, batches, modalities, augment_seed)
