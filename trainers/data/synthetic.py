"""Synthetic multimodal data after the UME/UMT paper (appendix A.10, after Hessel & Lee 2020).

Three families, each with a seed, a size, dimensions and noise:

- ``unimodal``: every modality alone carries the label (class prototypes seen through a random
  projection per modality); unimodal training is enough.
- ``paired``: the label is the sign of the cosine between two latent unit vectors, one per
  modality (pairs with |cos| below ``margin`` are rejected). Each modality alone is a uniformly
  random direction, independent of the label: only a model that lets the two interact can learn
  it (a late-fusion model needs a non-additive head for that, e.g. ``head="mlp"``).
- ``both``: three classes; class 0 is recognisable from each modality alone (its latent vectors
  lie in a cap around a fixed direction), classes 1 and 2 only from the pair (sign of the cosine),
  as in the paper's third dataset.

Lazy fusion (``unimodal`` mode, extra per-modality options). ``presence`` gives, per modality,
the probability that a sample shows its class there; otherwise that modality's latent is noise
alone (the paper's Definition 3.1: a uni-modal feature is present with some probability and
says nothing otherwise). ``dims`` and ``input_noise`` give each modality its own input size and
input-noise std. With

    make_synthetic("unimodal", n=1500, noise=0.3, presence=(0.75, 0.75), dims=(256, 16),
                   input_noise=(1.0, 0.1), split=(0.2, 0.1, 0.7))

the two modalities are about equally informative alone (test accuracy ~0.7, 4 classes) and
complementary (presence is drawn independently per modality), but m1 is "loud": 256 noisy input
dimensions for 300 training samples, so a model can memorise its noise. ``fusion_concat`` fits
the training samples whose class shows only in m2 (~19% of them; 90-100% right) by memorising
m1's noise instead of learning to rely on m2 there: on such test samples it is right 46-56% of
the time where the m2-alone model is right 86-93% (seeds 0-2, 40 epochs, batch 64). m2's encoder
inside the fused model is as good as alone (linear probe, 0.68-0.71 both): the fused decision
does not rely on it where m1 shows nothing. UME trains each modality alone and the mean of
the probabilities lets m2's confident prediction win there (76-88% on those samples): UME beats
fusion_concat on every seed 0-14, by 1-8 points, 5 on average
(``tests/test_synthetic_behaviour.py``). This is the paper's Section 3.4 argument (Figure 3,
point A vs point B; Theorem 3.4 (c), performance laziness): joint training stops learning once
the training error is zero, having used the cheapest features (here m1's memorisable noise),
while uni-modal training learns each modality's features fully. The loud modality is what
creates the effect: with ``dims=(16, 16)`` and ``input_noise=(0.1, 0.1)`` fusion_concat is as
good as UME or better (mean 0.873 vs 0.856 over seeds 0-4; UME 9 points behind on seed 3).
"""

from __future__ import annotations

import functools
import math

import torch

from trainers.data import register_dataset
from trainers.data.contract import DataBundle, DataError, DatasetSpec, ModalitySpec, TensorDataset

MODES = ("unimodal", "paired", "both")


def _unit(g: torch.Generator, n: int, k: int) -> torch.Tensor:
    v = torch.randn(n, k, generator=g)
    return v / v.norm(dim=1, keepdim=True)


def _latents_unimodal(g: torch.Generator, n: int, k: int, m: int, classes: int,
                      noise: float, scale: tuple[float, ...],
                      presence: tuple[float, ...] = ()) -> tuple[list[torch.Tensor],
                                                                 torch.Tensor]:
    protos = [_unit(g, classes, k) for _ in range(m)]
    y = torch.randint(0, classes, (n,), generator=g)
    latents = [p[y] + s * noise * torch.randn(n, k, generator=g)
               for p, s in zip(protos, scale, strict=True)]
    if presence:  # drawn only when asked for, so the default stream is unchanged
        for i, (p, q) in enumerate(zip(protos, presence, strict=True)):
            absent = torch.rand(n, generator=g) >= q
            latents[i] = latents[i] - p[y] * absent[:, None]  # noise alone: nothing to learn
    return latents, y


def _paired(g: torch.Generator, n: int, k: int, margin: float,
            cap: tuple[torch.Tensor, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n pairs of unit vectors with |cos| >= margin (and, with ``cap``, outside the cap)."""
    out_a, out_b, have = [], [], 0
    while have < n:
        a, b = _unit(g, 4 * n, k), _unit(g, 4 * n, k)
        keep = (a * b).sum(1).abs() >= margin
        if cap is not None:
            d, c = cap
            keep &= (a @ d < c) & (b @ d < c)
        out_a.append(a[keep])
        out_b.append(b[keep])
        have += int(keep.sum())
    return torch.cat(out_a)[:n], torch.cat(out_b)[:n]


def _cap(g: torch.Generator, n: int, d: torch.Tensor, c: float) -> torch.Tensor:
    """n unit vectors within the cap {v : v . d >= c} (rejection sampling around d)."""
    out, have = [], 0
    while have < n:
        v = d + 0.6 * torch.randn(4 * n, d.numel(), generator=g) / math.sqrt(d.numel())
        v = v / v.norm(dim=1, keepdim=True)
        v = v[v @ d >= c]
        out.append(v)
        have += len(v)
    return torch.cat(out)[:n]


def _latents(mode: str, g: torch.Generator, n: int, k: int, m: int, classes: int,
             noise: float, margin: float, scale: tuple[float, ...],
             presence: tuple[float, ...] = ()) -> tuple[list[torch.Tensor], torch.Tensor]:
    if mode == "unimodal":
        return _latents_unimodal(g, n, k, m, classes, noise, scale, presence)
    if mode == "paired":
        a, b = _paired(g, n, k, margin)
        return [a, b], ((a * b).sum(1) > 0).long()
    d, c = _unit(g, 1, k)[0], 0.5
    n0 = n // 3
    a0, b0 = _cap(g, n0, d, c), _cap(g, n0, d, c)
    a, b = _paired(g, n - n0, k, margin, cap=(d, c))
    y = torch.cat([torch.zeros(n0, dtype=torch.long), 1 + ((a * b).sum(1) > 0).long()])
    return [torch.cat([a0, a]), torch.cat([b0, b])], y


def make_synthetic(mode: str = "paired", n: int = 1200, latent_dim: int = 4, dim: int = 32,
                   num_modalities: int = 2, num_classes: int = 4, noise: float = 0.1,
                   margin: float = 0.15, seed: int = 0,
                   split: tuple[float, float, float] = (0.6, 0.2, 0.2),
                   noise_scale: tuple[float, ...] = (), presence: tuple[float, ...] = (),
                   dims: tuple[int, ...] = (),
                   input_noise: tuple[float, ...] = ()) -> DataBundle:
    """Build one synthetic dataset; ``num_classes``/``num_modalities`` apply to ``unimodal``.

    ``noise_scale`` multiplies ``noise`` per modality (``unimodal`` mode: the latent noise too),
    to make one modality strong and another weak. ``presence`` (``unimodal`` only), ``dims``
    and ``input_noise`` are per-modality too (see the module docstring, "lazy fusion"): the
    probability that a sample's modality shows its class, the input size (default ``dim``) and
    the input-space noise std (default ``noise`` times ``noise_scale``). Left empty, they
    change nothing, not even the random stream.
    """
    _check_args(mode, n, latent_dim, dim, num_modalities, num_classes, noise, margin, split)
    g = torch.Generator().manual_seed(seed)
    m = num_modalities if mode == "unimodal" else 2
    scale = tuple(noise_scale) or (1.0,) * m
    if len(scale) != m or min(scale) < 0:
        raise DataError(f"synthetic noise_scale must give {m} non-negative factors, got {scale}")
    presence, dims, input_noise = _check_per_modality(mode, m, dim, noise, scale, presence,
                                                      dims, input_noise)
    classes = {"unimodal": num_classes, "paired": 2, "both": 3}[mode]
    latents, y = _latents(mode, g, n, latent_dim, m, classes, noise, margin, scale, presence)
    names = [f"m{i + 1}" for i in range(m)]
    xs = {}
    for name, z, d, s in zip(names, latents, dims, input_noise, strict=True):
        proj = torch.randn(latent_dim, d, generator=g) / math.sqrt(latent_dim)
        xs[name] = z @ proj + s * torch.randn(n, d, generator=g)
    spec = DatasetSpec(
        name=f"synthetic_{mode}", task="classification",
        modalities=tuple(ModalitySpec(nm, "vector", (d,)) for nm, d in zip(names, dims,
                                                                              strict=True)),
        num_classes=classes,
        recipe=(f"synthetic mode={mode} n={n} latent_dim={latent_dim} dim={dim} noise={noise} "
                f"margin={margin} seed={seed}" + _recipe_extra(presence, dims, input_noise, dim,
                                                                noise, scale)),
        version="1")
    order = torch.randperm(n, generator=g)
    n_tr, n_va = int(split[0] * n), int(split[1] * n)
    parts = {"train": order[:n_tr], "val": order[n_tr:n_tr + n_va], "test": order[n_tr + n_va:]}
    return DataBundle(spec, {
        s: TensorDataset(spec, s, {k: v[i] for k, v in xs.items()}, y[i]) for s, i in parts.items()
    })


def _check_per_modality(mode: str, m: int, dim: int, noise: float, scale: tuple[float, ...],
                        presence: tuple[float, ...], dims: tuple[int, ...],
                        input_noise: tuple[float, ...]) -> tuple[tuple[float, ...],
                                                                 tuple[int, ...],
                                                                 tuple[float, ...]]:
    """Validate the per-modality options; return them with their defaults filled in."""
    presence, dims, input_noise = tuple(presence), tuple(dims), tuple(input_noise)
    if presence and mode != "unimodal":
        raise DataError(f"synthetic presence applies to mode 'unimodal' only, not {mode!r}")
    if presence and (len(presence) != m or not all(0 <= q <= 1 for q in presence)):
        raise DataError(f"synthetic presence must give {m} probabilities in [0, 1], "
                        f"got {presence}")
    if dims and (len(dims) != m or not all(int(d) == d and d >= 1 for d in dims)):
        raise DataError(f"synthetic dims must give {m} integers >= 1, got {dims}")
    if input_noise and (len(input_noise) != m or min(input_noise) < 0):
        raise DataError(f"synthetic input_noise must give {m} non-negative stds, "
                        f"got {input_noise}")
    return (presence, tuple(int(d) for d in dims) or (dim,) * m,
            input_noise or tuple(s * noise for s in scale))


def _recipe_extra(presence: tuple[float, ...], dims: tuple[int, ...],
                  input_noise: tuple[float, ...], dim: int, noise: float,
                  scale: tuple[float, ...]) -> str:
    """The non-default per-modality options, so that the default recipes stay as they were."""
    extra = ""
    if presence:
        extra += f" presence={list(presence)}"
    if dims != (dim,) * len(dims):
        extra += f" dims={list(dims)}"
    if input_noise != tuple(s * noise for s in scale):
        extra += f" input_noise={list(input_noise)}"
    return extra


def _check_args(mode: str, n: int, latent_dim: int, dim: int, num_modalities: int,
                num_classes: int, noise: float, margin: float,
                split: tuple[float, float, float]) -> None:
    if mode not in MODES:
        raise DataError(f"synthetic mode must be one of {list(MODES)} but got {mode!r}")
    for field, value, low in (("n", n, 30), ("latent_dim", latent_dim, 2), ("dim", dim, 1),
                              ("num_modalities", num_modalities, 2),
                              ("num_classes", num_classes, 2)):
        if int(value) != value or value < low:
            raise DataError(f"synthetic {field} must be an integer >= {low} but got {value!r}")
    if noise < 0:
        raise DataError(f"synthetic noise cannot be negative but got {noise}")
    if not 0 <= margin < 1:
        raise DataError(f"synthetic margin must be in [0, 1) but got {margin}")
    if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1) > 1e-6:
        raise DataError(f"synthetic split must be 3 positive fractions summing to 1, got {split}")


for _mode in MODES:
    register_dataset(f"synthetic_{_mode}")(functools.partial(make_synthetic, mode=_mode))
