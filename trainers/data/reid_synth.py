"""``"reid_synth"``: a seeded synthetic multi-modal re-identification set for CPU tests.

Objects (identities) are seen by several cameras from two views, in three modalities named
like the real benchmarks: ``rgb`` (3 ch), ``nir`` (1 ch), ``tir`` (1 ch). Why it makes the
reid evaluation meaningful:

- each identity has a coarse appearance pattern per modality made of a part shared by all
  modalities and a modality-specific part (rgb: one pattern tinted by an identity colour), so
  every modality carries identity signal, partly complementary; ``strengths`` sets how much
  (default rgb > nir > tir: unequally informative modalities, as in the real data);
- a camera sees one of two views of the object (camera c sees view c % 2) and adds its own
  nuisance: per-channel gain and offset (a colour / illumination shift) and a brightness
  gradient, so same-camera matches are easier and the protocol's removal of same-camera
  gallery items matters;
- every image also gets a random shift of up to one eighth of its width and pixel noise.

Splits are identity-disjoint: train, val (other identities, carved on the train side) and
query/gallery (the test identities): per test identity and camera with two or more images,
the first is a query and the rest gallery; single images go to the gallery. Train labels are
0..C-1 (C = train identities); val/query/gallery keep the raw identity ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainers.data import register_dataset
from trainers.data.contract import DataBundle, DataError, DatasetSpec, ModalitySpec, TensorDataset
from trainers.data.loading import check_size, relabel

VERSION = "1"
CHANNELS = {"rgb": 3, "nir": 1, "tir": 1}
_GRID = 4  # side of the coarse identity pattern, upsampled to the image size
VIEW = 0.5  # weight of the view-specific part of an appearance


def _check(num_ids: int, val_ids: int, test_ids: int, images_per_id: int, num_cameras: int,
           strengths: Sequence[float]) -> None:
    if num_ids - val_ids - test_ids < 2 or val_ids < 1 or test_ids < 1:
        raise DataError(
            f"reid_synth needs val_ids >= 1, test_ids >= 1 and at least 2 train ids, but got "
            f"num_ids={num_ids}, val_ids={val_ids}, test_ids={test_ids}"
        )
    if not images_per_id > num_cameras >= 2:
        raise DataError(
            f"reid_synth needs images_per_id > num_cameras >= 2 (so each test id has a query "
            f"and a positive in another camera) but got images_per_id={images_per_id}, "
            f"num_cameras={num_cameras}"
        )
    if len(strengths) != len(CHANNELS) or min(strengths) < 0:
        raise DataError(f"reid_synth strengths must be {len(CHANNELS)} non-negative values "
                        f"(rgb, nir, tir) but got {tuple(strengths)}")


def _patterns(n: int, channels: int, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """(n, channels, H, W) smooth random patterns with unit std."""
    coarse = torch.randn(n, channels, _GRID, _GRID, generator=g)
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=True)


def _images(shared: torch.Tensor, channels: int, size: tuple[int, int], strength: float,
            pid: torch.Tensor, cam: torch.Tensor, num_cameras: int, noise: float,
            camera_shift: float, g: torch.Generator) -> torch.Tensor:
    """One modality's images (N, C, H, W) for samples with identity ``pid`` and ``cam``."""
    n_ids = shared.shape[0]
    colour = 1 + 0.5 * torch.randn(n_ids, channels, 1, 1, generator=g) if channels > 1 else 1.0
    identity = (shared + _patterns(n_ids, 1, size, g)) / 2**0.5 * colour
    views = identity[:, None] + VIEW * _patterns(n_ids * 2, channels, size, g).view(
        n_ids, 2, channels, *size)
    gain = 1 + camera_shift * (torch.rand(num_cameras, channels, 1, 1, generator=g) - 0.5)
    offset = camera_shift * torch.randn(num_cameras, channels, 1, 1, generator=g)
    ramp = torch.linspace(-1, 1, size[1]).view(1, 1, 1, -1)
    slope = camera_shift * torch.randn(num_cameras, 1, 1, 1, generator=g)
    x = strength * views[pid, cam % 2] * gain[cam] + offset[cam] + slope[cam] * ramp
    shifts = torch.randint(-(size[1] // 8), size[1] // 8 + 1, (len(pid),), generator=g)
    x = torch.stack([torch.roll(xi, int(s), dims=-1) for xi, s in zip(x, shifts, strict=True)])
    return x + noise * torch.randn(x.shape, generator=g)


def _query_mask(pid: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """First image of each (identity, camera) group with two or more images."""
    mask = torch.zeros(len(pid), dtype=torch.bool)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(pid.tolist(), cam.tolist(), strict=True)):
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        if len(members) >= 2:
            mask[members[0]] = True
    return mask


@register_dataset("reid_synth")
def reid_synth(num_ids: int = 64, val_ids: int = 8, test_ids: int = 16, images_per_id: int = 8,
               num_cameras: int = 4, image_size: Sequence[int] = (16, 16), noise: float = 0.5,
               camera_shift: float = 0.5, strengths: Sequence[float] = (0.7, 0.6, 0.5),
               seed: int = 0) -> DataBundle:
    """Identities 0..num_ids-1 in a seeded random order: the first num_ids - val_ids -
    test_ids train (40 by default), then val, then test (query/gallery)."""
    _check(num_ids, val_ids, test_ids, images_per_id, num_cameras, strengths)
    size = check_size("image_size", image_size)
    g = torch.Generator().manual_seed(seed)
    pid = torch.arange(num_ids).repeat_interleave(images_per_id)
    cam = torch.arange(images_per_id).repeat(num_ids) % num_cameras
    shared = _patterns(num_ids, 1, size, g)
    x = {m: _images(shared, c, size, s, pid, cam, num_cameras, noise, camera_shift, g)
         for (m, c), s in zip(CHANNELS.items(), strengths, strict=True)}
    order = torch.randperm(num_ids, generator=g)
    n_train = num_ids - val_ids - test_ids
    ids = {"train": order[:n_train], "val": order[n_train:n_train + val_ids],
           "test": order[n_train + val_ids:]}
    member = {s: torch.isin(pid, v) for s, v in ids.items()}
    query = member["test"] & _query_mask(pid, cam)
    masks = {"train": member["train"], "val": member["val"], "query": query,
             "gallery": member["test"] & ~query}
    spec = DatasetSpec(
        "reid_synth", "reid",
        tuple(ModalitySpec(m, "image", (c, *size)) for m, c in CHANNELS.items()),
        num_classes=n_train, version=f"reid_synth/{VERSION}",
        recipe=(f"reid_synth(num_ids={num_ids}, val_ids={val_ids}, test_ids={test_ids}, "
                f"images_per_id={images_per_id}, num_cameras={num_cameras}, "
                f"image_size={size}, noise={noise}, camera_shift={camera_shift}, "
                f"strengths={tuple(strengths)}, seed={seed})"))
    to_label = relabel(ids["train"].tolist())
    splits = {}
    for split, mask in masks.items():
        labels = pid[mask]
        if split == "train":
            labels = torch.tensor([to_label[int(p)] for p in labels], dtype=torch.long)
        splits[split] = TensorDataset(spec, split, {m: t[mask] for m, t in x.items()}, labels,
                                      camids=cam[mask])
    return DataBundle(spec, splits)
