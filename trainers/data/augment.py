"""Train-split augmentation recipes, written down as data.

A recipe is a short list of operations (``hflip``, ``pad_crop``, ``erase``,
``resized_crop``), each applied to the image modalities it names (``on``; default: every
image modality). Recipes act on the already decoded and normalised tensors, on the fly, only
on the train split and only while training; evaluation never sees them. Every sample's draws
come from a generator seeded by (epoch seed, batch number, position in the batch), so the
same seed gives the same run whatever the number of worker processes. Each modality gets its
own draws (a flip of RGB does not flip NIR), as the released per-modality loaders do.

Defaults per dataset (``RECIPES``), from the papers' released settings:

* reid (``rgbnt100``, ``rgbn300``, ``rgbnt201``, ``msvr310``): TransReID / TOP-ReID configs
  used by the UniCat line of work (``INPUT.PROB 0.5``, ``PADDING 10``, ``RE_PROB 0.5``):
  horizontal flip p=0.5, pad 10 px + random crop back to size, random erasing p=0.5 with
  area 0.02-0.4 of the image and aspect ratio 0.3-3.3.
* ``cremad`` / ``ave``: OGM-GE's (and ReconBoost's, which reuses it) train transform of the
  frames, ``RandomResizedCrop`` (scale 0.08-1, ratio 3/4-4/3) + ``RandomHorizontalFlip``;
  the spectrogram is not augmented.

Differences from those codes, on purpose: padding and erasing fill with 0 in normalised
space (the channel mean) instead of black / the ImageNet mean, because recipes run after
normalisation; frames stacked as channels share one crop and one flip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainers.data.contract import DataError, DatasetSpec
from trainers.registry import Registry

RECIPE_VERSION = "1"
Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
OPS: Registry[type] = Registry("augmentation")

_REID = ({"op": "hflip", "p": 0.5}, {"op": "pad_crop", "pad": 10},
         {"op": "erase", "p": 0.5, "area": [0.02, 0.4], "ratio": 0.3})
_FRAMES = ({"op": "resized_crop", "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3],
            "on": ["visual"]}, {"op": "hflip", "p": 0.5, "on": ["visual"]})
RECIPES: dict[str, tuple[dict[str, Any], ...]] = {
    "rgbnt100": _REID, "rgbn300": _REID, "rgbnt201": _REID, "msvr310": _REID,
    "cremad": _FRAMES, "ave": _FRAMES,
}


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, hi: int) -> int:
    """An int in [0, hi]."""
    return int(torch.randint(0, hi + 1, (), generator=g))


def _check_prob(name: str, p: float) -> None:
    if not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise DataError(f"augment: {name} p must be in [0, 1] but got {p!r}")


def _check_range(name: str, field: str, r: Sequence[float], lo: float) -> tuple[float, float]:
    r = tuple(r)
    if (len(r) != 2 or not all(isinstance(v, int | float) and math.isfinite(v) for v in r)
            or not lo < r[0] <= r[1]):
        raise DataError(f"augment: {name} {field} must be [low, high] with {lo} < low <= high "
                        f"but got {list(r)!r}")
    return float(r[0]), float(r[1])


@OPS.register("hflip")
@dataclass(frozen=True)
class HFlip:
    """Mirror left-right with probability ``p``."""

    p: float = 0.5

    def __post_init__(self) -> None:
        _check_prob("hflip", self.p)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x.flip(-1) if _uniform(g) < self.p else x


@OPS.register("pad_crop")
@dataclass(frozen=True)
class PadCrop:
    """Pad ``pad`` px on every side (fill 0), then crop a random window of the input size."""

    pad: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise DataError(f"augment: pad_crop pad must be a non-negative int but got "
                            f"{self.pad!r}")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (self.pad,) * 4)
        top, left = _randint(g, 2 * self.pad), _randint(g, 2 * self.pad)
        return padded[..., top:top + h, left:left + w]


@OPS.register("erase")
@dataclass(frozen=True)
class Erase:
    """Random erasing (Zhong et al.; TransReID's version): with probability ``p`` fill one
    rectangle of ``area`` x image area and aspect ratio in [ratio, 1/ratio] with ``value``."""

    p: float = 0.5
    area: tuple[float, float] = (0.02, 0.4)
    ratio: float = 0.3
    value: float = 0.0

    def __post_init__(self) -> None:
        _check_prob("erase", self.p)
        object.__setattr__(self, "area", _check_range("erase", "area", self.area, 0.0))
        if self.area[1] > 1.0:
            raise DataError(f"augment: erase area must be within (0, 1] but got {self.area}")
        if not isinstance(self.ratio, int | float) or not 0.0 < self.ratio <= 1.0:
            raise DataError(f"augment: erase ratio must be in (0, 1] but got {self.ratio!r}")
        if not isinstance(self.value, int | float) or not math.isfinite(self.value):
            raise DataError(f"augment: erase value must be a finite number but got "
                            f"{self.value!r}")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if _uniform(g) >= self.p:
            return x
        h, w = x.shape[-2:]
        for _ in range(100):  # as TransReID: retry until the rectangle fits
            target = _uniform(g, *self.area) * h * w
            aspect = _uniform(g, self.ratio, 1.0 / self.ratio)
            eh, ew = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < eh < h and 0 < ew < w:
                top, left = _randint(g, h - eh), _randint(g, w - ew)
                x = x.clone()
                x[..., top:top + eh, left:left + ew] = self.value
                return x
        return x


@OPS.register("resized_crop")
@dataclass(frozen=True)
class ResizedCrop:
    """torchvision's ``RandomResizedCrop``: a window of ``scale`` x area and aspect ``ratio``
    (10 tries, else the centre crop), resized (bilinear) to ``size`` (default: input size)."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4 / 3)
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _check_range("resized_crop", "scale", self.scale, 0))
        object.__setattr__(self, "ratio", _check_range("resized_crop", "ratio", self.ratio, 0))
        if self.size is not None:
            size = tuple(self.size)
            if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
                raise DataError(f"augment: resized_crop size must be [height, width] of "
                                f"positive ints (or absent: the input size) but got {self.size!r}")
            object.__setattr__(self, "size", size)

    def window(self, h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int]:
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = _uniform(g, *self.scale) * h * w
            aspect = math.exp(_uniform(g, *log_r))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                return _randint(g, h - ch), _randint(g, w - cw), ch, cw
        ch, cw = h, w  # fallback: the largest centre crop within the ratio range
        if w / h < self.ratio[0]:
            ch = round(w / self.ratio[0])
        elif w / h > self.ratio[1]:
            cw = round(h * self.ratio[1])
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        top, left, ch, cw = self.window(h, w, g)
        crop = x[..., top:top + ch, left:left + cw].unsqueeze(0)
        size = self.size or (h, w)
        return F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0]


@dataclass(frozen=True)
class Step:
    """One operation and the modalities it applies to."""

    name: str
    op: Op
    on: tuple[str, ...]

    def describe(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self.op, f.name)}" for f in fields(self.op))
        return f"{self.name}({args}) on {'/'.join(self.on)}"


@dataclass(frozen=True)
class Recipe:
    """A checked list of steps for one dataset; ``apply`` augments one collated batch."""

    steps: tuple[Step, ...]

    def describe(self) -> str:
        return f"train augment v{RECIPE_VERSION}: " + "; ".join(s.describe() for s in self.steps)

    def apply(self, x: Mapping[str, torch.Tensor], seed: int,
              batch: int) -> dict[str, torch.Tensor]:
        """Augment every sample of a batch ``x`` (modality -> (N, ...)); modalities not in
        ``x`` (not decoded for this job) are skipped. A wrong output shape is an error."""
        targets = {m for s in self.steps for m in s.on if m in x}
        out = {m: t.clone() if m in targets else t for m, t in x.items()}
        n = len(next(iter(x.values())))
        for j in range(n):
            g = sample_generator(seed, batch, j)
            for step in self.steps:
                for m in step.on:
                    if m in out:
                        out[m][j] = _checked(step, m, out[m][j], g)
        return out


def _checked(step: Step, m: str, before: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    after = step.op(before, g)
    if after.shape != before.shape:
        raise DataError(f"augmentation {step.name!r} turned modality {m!r} of shape "
                        f"{tuple(before.shape)} into {tuple(after.shape)}; an augmentation "
                        "must keep the shape (check its size setting)")
    return after


def sample_generator(seed: int, batch: int, position: int) -> torch.Generator:
    """The generator of one sample's draws: depends only on (seed, batch, position)."""
    state = np.random.SeedSequence([seed, batch, position]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def make_recipe(value: object, spec: DatasetSpec, dataset: str) -> Recipe:
    """``augment`` as a user gives it -> a checked :class:`Recipe`.

    ``"default"`` (or None): the dataset's entry in ``RECIPES`` (none when it has none);
    ``"none"``: no augmentation; ``"hflip,erase"``: those operations with their defaults;
    a list of names or dicts ``{"op": "pad_crop", "pad": 4, "on": ["rgb"]}``.
    """
    if value is None or value == "default":
        items: Sequence[object] = RECIPES.get(dataset, ())
    elif value == "none":
        items = ()
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise DataError(f"augment must be 'default', 'none', 'op1,op2' or a list of operations "
                        f"but got {value!r}")
    recipe = Recipe(tuple(_step(item, spec) for item in items))
    _check_shapes(recipe, spec)
    return recipe


def _step(item: object, spec: DatasetSpec) -> Step:
    d = {"op": item} if isinstance(item, str) else item
    if not isinstance(d, Mapping) or "op" not in d:
        raise DataError(f"augment: each operation is a name or a dict with 'op' but got {item!r}")
    name = d["op"]
    try:
        cls = OPS.get(name)
    except KeyError as e:
        raise DataError(f"augment: {e.args[0]}") from None
    settings = {k: v for k, v in d.items() if k not in ("op", "on")}
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise DataError(f"augment: {name} has no setting {unknown[0]!r}; its settings: "
                        f"{', '.join(valid + ['on'])}")
    images = [m.name for m in spec.modalities if m.kind == "image"]
    on = d.get("on", images)
    on = [on] if isinstance(on, str) else list(on)
    bad = [m for m in on if m not in images]
    if bad:
        raise DataError(f"augment: {name} on {bad[0]!r}: not an image modality of dataset "
                        f"{spec.name!r}; its image modalities: {images}")
    return Step(name, cls(**settings), tuple(on))


def _check_shapes(recipe: Recipe, spec: DatasetSpec) -> None:
    """Run the recipe once on zeros so a shape-changing setting fails at construction."""
    if not recipe.steps:
        return
    zeros = {m.name: torch.zeros((1, *m.shape)) for m in spec.modalities if m.kind == "image"}
    recipe.apply(zeros, seed=0, batch=0)
