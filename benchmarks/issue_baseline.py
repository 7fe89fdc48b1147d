"""The synchronous input path as it was when the input-pipeline issue was filed (it measured
187 samples/s for three modalities on one core), kept so ``benchmarks.input_pipeline`` can
measure the pipeline against it in the same run. The trainers never use it.

Then, a training batch was made in the training thread, one sample at a time: each modality's
file was decoded by PIL to RGB, converted to the modality's mode, resized (a copy even when
already at the size), turned into floats in numpy and normalised out of place; every float of
the sample was checked for NaN and inf; the samples were then stacked. :func:`legacy_sample`
does that work. Its floats equal today's reader's (tested), so the comparison is between two
ways of making the same batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainers.data.contract import MultimodalDataset
from trainers.data.images import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD


def legacy_read(path: Path, size: tuple[int, int], channels: int) -> torch.Tensor:
    """One image, normalised floats (C, H, W), read as the loaders read it then."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    im = im.convert("RGB" if channels == 3 else "L").resize((size[1], size[0]),
                                                            Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    x = x.permute(2, 0, 1) if channels == 3 else x.unsqueeze(0)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def legacy_sample(ds: MultimodalDataset, i: int) -> dict:
    """Sample ``i`` of a file-backed reid split (one file per modality), every modality read
    by :func:`legacy_read` and checked for NaN and inf, as ``ds[i]`` was then."""
    record = ds.loader.records[i]  # type: ignore[attr-defined]
    x = {}
    for m, path in zip(ds.spec.modalities, record.files, strict=True):
        t = legacy_read(path, m.shape[1:], m.shape[0])
        if not torch.isfinite(t).all():
            raise ValueError(f"{path}: NaN or inf")
        x[m.name] = t
    return {"x": x, "y": int(ds.labels[i]), "camid": int(ds.camids[i]),
            "sceneid": int(ds.sceneids[i]), "index": i}
