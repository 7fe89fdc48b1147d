"""AV-Digits: the embedded default dataset (10 digits, audio + image, no download).

The 1,797 real 8x8 scikit-learn digits, each paired with a spoken recording of the same digit
(espeak-ng, many voices and accents, noise at varied SNR) as a 12 x 12 log-mel spectrogram.
Audio is the dominant modality and the degraded image the weak one; each modality is badly
damaged on an independent subset of samples, so fusion beats either alone. How the file was
made (every parameter, tool versions) is in ``spec.recipe``; the rebuild script is
:mod:`trainers.data.build_avdigits`.

Inputs are stored as uint8 in [0, 255], decoded to [0, 1], then (``normalize=True``) each
modality is standardised with ONE scalar mean and std computed on the train split only, so
val/test statistics never leak into training and relative spectral levels are kept.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from trainers.data import register_dataset
from trainers.data.arrays import load_npz
from trainers.data.contract import (
    CLASSIFICATION_SPLITS,
    DataBundle,
    DataError,
    DatasetSpec,
    ModalitySpec,
    TensorDataset,
)

ASSET = "avdigits-v1.npz"
MODALITIES = ("audio", "image")
REQUIRED = (*MODALITIES, "label", "class_names", "recipe", "version",
            *(f"{s}_idx" for s in CLASSIFICATION_SPLITS))
REBUILD = "rebuild it with: python -m trainers.data.build_avdigits --out <file>.npz"


def read_npz(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """All arrays of the packaged file (or of ``path``, e.g. a rebuild with another seed)."""
    if path is None:
        source: str | bytes = resources.files("trainers.data").joinpath("assets",
                                                                        ASSET).read_bytes()
        where = f"package asset trainers/data/assets/{ASSET}"
    else:
        if not Path(path).is_file():
            raise DataError(f"avdigits: file {str(path)!r} does not exist; {REBUILD}")
        source, where = str(path), str(path)
    arrays = load_npz(source, f"avdigits: {where}", REBUILD)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DataError(f"avdigits: {where} lacks array {missing[0]!r}; {REBUILD}")
    return arrays


def make_spec(arrays: dict[str, np.ndarray]) -> DatasetSpec:
    """The spec, with shapes, class names, recipe and version taken from the file itself."""
    return DatasetSpec(
        name="avdigits",
        task="classification",
        modalities=tuple(ModalitySpec(m, "image", tuple(arrays[m].shape[1:]))
                         for m in MODALITIES),
        num_classes=len(arrays["class_names"]),
        class_names=tuple(str(c) for c in arrays["class_names"]),
        recipe=str(arrays["recipe"]),
        version=str(arrays["version"]),
    )


def standardise(x: torch.Tensor, train_idx: torch.Tensor) -> torch.Tensor:
    """Scalar z-score with statistics from the train rows only."""
    train = x[train_idx]
    return (x - train.mean()) / train.std().clamp_min(1e-6)


@register_dataset("avdigits")
def avdigits(normalize: bool = True, path: str | Path | None = None) -> DataBundle:
    """Build the train/val/test splits stored in the file (stratified 60/20/20 by digit)."""
    arrays = read_npz(path)
    spec = make_spec(arrays)
    idx = {s: torch.from_numpy(arrays[f"{s}_idx"].astype(np.int64))
           for s in CLASSIFICATION_SPLITS}
    tensors = {m: torch.from_numpy(arrays[m].astype(np.float32) / 255.0) for m in MODALITIES}
    if normalize:
        tensors = {m: standardise(t, idx["train"]) for m, t in tensors.items()}
    labels = torch.from_numpy(arrays["label"].astype(np.int64))
    splits = {s: TensorDataset(spec, s, {m: t[i] for m, t in tensors.items()}, labels[i])
              for s, i in idx.items()}
    return DataBundle(spec, splits)


def recipe(path: str | Path | None = None) -> dict:
    """The build recipe as a dict (parameters, voices, tool versions)."""
    return json.loads(str(read_npz(path)["recipe"]))


def metadata(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Per-sample build metadata for analyses (e.g. accuracy vs. SNR or image severity).

    Rows are in file order; index them with a split's ``*_idx`` array (also returned)."""
    arrays = read_npz(path)
    keep = [k for k in arrays if k.startswith(("audio_", "image_")) or k.endswith("_idx")]
    return {k: arrays[k] for k in [*keep, "label"]}
