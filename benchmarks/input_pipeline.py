"""The input pipeline for file-backed data: the synchronous path vs workers, modalities
decoded, and the preprocessing cache.

Run from the repository root: ``python -m benchmarks.input_pipeline`` (``--help`` for options).

It writes a tree in the RGBNT201 layout (``train_171/{RGB,NI,TI}/<name>.jpg`` plus a small
``test/``) of ``--samples`` training samples, 3 JPEGs of 256 x 128 each (smooth random
images, so JPEG sizes and decode costs are like photos'), 28 images per identity as in the
real set (fewer for small trees, see ``per_identity``). The default is 598 samples, 1/8 of
RGBNT201's 4,787, so a run takes a few minutes on 2 cores; ``--samples 4787`` is the full
size. Then, in one run:

* samples/s over training epochs in the steady state (three epochs after a first one; P x K
  batches of 64, no augmentation on either side so the work is the same), against two
  synchronous baselines, one epoch of each run right before every configuration (the 2 cores
  are shared with other work whose load changes within minutes): the path as the issue
  measured it (``benchmarks/issue_baseline.py``: every sample of every modality decoded by
  PIL to RGB, converted, resized, floats, checked for NaN, in the training thread), which
  the targets are judged against; and ``ds[i]`` with today's reader (the same per-image
  code as the pipeline, in the training thread, every modality), which shows what is left
  once the per-image speed-ups go to the synchronous path too. Against them: the
  pipeline with ``--workers`` worker processes (uint8 batches cross the process boundary and
  are normalised per batch in the training process), the pipeline without workers (the
  CPU-only default: the same per-batch work in the training thread), with the default reid
  recipe (flip, pad + crop, erasing), and a job reading the preprocessing cache (decoded
  once, memory-mapped), for a 3-modality job and a unimodal RGB job (which decodes RGB
  only). The headline: files decoded by the pipeline with workers (a first job, or no
  cache) against the targets, and the cache (every later job on a storage: the sweep
  scripts put the cache at ``<storage>/data-cache`` by default).
* time from ``create_dataset`` to the first training batch: before (``validate="all"``, no
  cache), a first job with ``cache_dir`` (builds the cache) and a second job (cache hit).
* the fraction of a training epoch spent waiting for data (time inside the batch iterator /
  epoch time), one ``fusion_concat`` epoch with the default reid backbone (``cnn``,
  ``TrainConfig`` defaults), for the pipeline without and with workers, and the cache.

Targets (issue): >= 1.8x for the 3-modality job, >= 5x for the unimodal job, <= 1 s to the
first batch on a cache hit. The machine's other load changes throughput figures: every row
ends with the 1-minute load average (``os.getloadavg``) when it was measured, and the
summary says how many CPUs there are.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from benchmarks import make_parser, median, scratch, summary_block, timed
from benchmarks.issue_baseline import legacy_sample
from trainers.data import DataBundle, create_dataset

RGBNT201_TRAIN = 4787
IMAGES_PER_ID = 28  # 4,787 images of 171 identities
SIZE = (256, 128)  # (height, width)
BATCH = 64
SPEEDUP_3 = 1.8
SPEEDUP_1 = 5.0
HIT_TARGET_S = 1.0


# ---- pure helpers (unit-tested) ------------------------------------------------------------

def per_identity(samples: int) -> int:
    """IMAGES_PER_ID, fewer for small trees so there are >= 20 identities (P x K = 16 x 4
    batches after the validation identities are carved out)."""
    return min(IMAGES_PER_ID, max(4, samples // 20))


def sample_names(samples: int, first_pid: int = 1) -> list[str]:
    """RGBNT201 file names for ``samples`` images, ``per_identity`` each, 4 cameras."""
    k = per_identity(samples)
    return [f"{first_pid + i // k:06d}_cam{1 + i % 4}_{i % k}_00.jpg" for i in range(samples)]


def smooth_image(seed: int, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Image.Image:
    """A deterministic smooth random image (upsampled 16 x 8 noise)."""
    rng = np.random.default_rng(seed)
    shape = (16, 8, 3) if mode == "RGB" else (16, 8)
    small = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    return small.resize((size[1], size[0]), Image.Resampling.BICUBIC)


def rate(samples: int, seconds: float) -> float:
    return samples / seconds if seconds > 0 else float("inf")


def wait_fraction(wait_s: float, total_s: float) -> float:
    if total_s <= 0:
        raise ValueError(f"total_s must be positive but got {total_s!r}")
    return min(1.0, max(0.0, wait_s / total_s))


def at_least(value: float, target: float) -> str:
    """``met`` when ``value >= target`` (a lower bound, unlike ``benchmarks.verdict``)."""
    return "met" if value >= target else "MISSED"


# ---- the tree --------------------------------------------------------------------------------

def write_tree(root: Path, samples: int) -> Path:
    """``train_171`` with ``samples`` samples and ``test`` with 1/8 of that (at least 8)."""
    for s, (split, names) in enumerate((("train_171", sample_names(samples)),
                                        ("test", sample_names(max(8, samples // 8), 900)))):
        for m, (mod, mode) in enumerate((("RGB", "RGB"), ("NI", "L"), ("TI", "L"))):
            folder = root / split / mod
            folder.mkdir(parents=True, exist_ok=True)
            for k, name in enumerate(names):
                seed = (s * 3 + m) * 1_000_003 + k
                smooth_image(seed, mode=mode).save(folder / name, quality=90)
    return root


# ---- measurements ---------------------------------------------------------------------------

def load(root: Path, **kw: object) -> DataBundle:
    return create_dataset("rgbnt201", root=str(root), **{"validate": "first", **kw})


class Reads:
    """What ``loop.batches`` asks of a strategy: the modalities it reads. A module-level class:
    one defined in a function would hold the data in a reference cycle, which keeps its
    worker processes alive until Python's cycle collector runs."""

    def __init__(self, modalities: tuple[str, ...]) -> None:
        self.modalities = modalities

    def input_modalities(self) -> tuple[str, ...]:
        return self.modalities


def epoch_rate(data: DataBundle, modalities: Sequence[str] | None, epochs: int = 3) -> float:
    """Samples/s of training epochs of the loop's own batches, in the steady state: ``epochs``
    epochs after a first one (which starts the workers and warms the file cache)."""
    from trainers.loop import batches

    reads = Reads(tuple(modalities or data.spec.modality_names))
    n, t0 = 0, 0.0
    for seed in range(epochs + 1):
        if seed == 1:
            n, t0 = 0, time.perf_counter()
        for b in batches(reads, data["train"], BATCH, seed, train=True):  # type: ignore[arg-type]
            n += len(b["y"])
    return rate(n, time.perf_counter() - t0)


class Baseline:
    """The synchronous paths, one epoch of each measured right before every configuration so
    each ratio compares epochs run under about the same load of the shared machine:

    * ``issue``: the path as the issue measured it (``benchmarks.issue_baseline``: PIL to RGB,
      converted, resized, floats, NaN/inf check, per sample in the training thread);
    * ``today``: ``ds[i]`` per sample in the training thread with today's reader (the same
      per-image code as the pipeline, every modality), then stacked: what is left of the gain
      once the per-image speed-ups are given to the synchronous path too."""

    def __init__(self, data: DataBundle) -> None:
        self.ds = data["train"]
        self.paths = {"issue": partial(legacy_sample, self.ds), "today": self.ds.__getitem__}
        self.rates: dict[str, list[float]] = {k: [] for k in self.paths}
        for k in self.paths:
            self.epoch(k, record=False)  # warms the file cache, as the configurations' first epoch

    def epoch(self, path: str, record: bool = True) -> float:
        from trainers.data.contract import collate
        from trainers.reid.sampler import pk_batches

        idx = pk_batches(self.ds.labels.tolist(), p=BATCH // 4, k=4, seed=1, epoch=0)
        sample, n, t0 = self.paths[path], 0, time.perf_counter()
        for b in idx:
            n += len(collate([sample(i) for i in b])["y"])
        r = rate(n, time.perf_counter() - t0)
        if record:
            self.rates[path].append(r)
        return r

    def ratio(self, measure: Callable[[], float]) -> tuple[float, dict[str, float]]:
        """(samples/s of ``measure()``, its ratio to each path's epoch just before it)."""
        sync = {k: self.epoch(k) for k in self.paths}
        value = measure()
        return value, {k: value / r for k, r in sync.items()}


def both(ratios: dict[str, float]) -> str:
    """``a.aax / b.bbx``: a ratio to the issue's synchronous path, then to today's."""
    return f"{ratios['issue']:.2f}x / {ratios['today']:.2f}x"


def load_text() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def first_batch_s(make: Callable[[], DataBundle]) -> float:
    from trainers.loop import batches

    def go() -> None:
        data = make()
        next(iter(batches(None, data["train"], BATCH, 0, train=True)))

    return timed(go)[1]


@contextmanager
def waiting_time() -> Iterator[dict[str, float]]:
    """Time spent inside the training batch iterator and in train_epoch, for one fit."""
    import trainers.loop as loop

    acc = {"wait": 0.0, "epoch": 0.0}
    real_batches, real_epoch = loop.batches, loop.train_epoch

    def timed_batches(*a: object, **k: object) -> Iterator[dict]:
        it = iter(real_batches(*a, **k))
        while True:
            t0 = time.perf_counter()
            try:
                b = next(it)
            except StopIteration:
                return
            finally:
                acc["wait"] += time.perf_counter() - t0
            yield b

    def timed_epoch(*a: object, **k: object) -> dict[str, float]:
        out, s = timed(lambda: real_epoch(*a, **k))
        acc["epoch"] += s
        return out

    with mock.patch.object(loop, "batches", timed_batches), \
            mock.patch.object(loop, "train_epoch", timed_epoch):
        yield acc


def train_wait(data: DataBundle) -> float:
    from trainers.api import train
    from trainers.config import TrainConfig

    with waiting_time() as acc:
        train(data, TrainConfig(strategy="fusion_concat", epochs=1, batch_size=BATCH))
    return wait_fraction(acc["wait"], acc["epoch"])


def main(argv: Sequence[str] | None = None) -> None:
    p = make_parser(__doc__ or "")
    p.add_argument("--samples", type=int, default=RGBNT201_TRAIN // 8,
                   help="training samples in the generated tree (default 598 = 4787 / 8)")
    p.add_argument("--workers", type=int, default=2, help="pipeline worker processes")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the training process (default 1: one core, as a "
                        "1-CPU job; workers always use one thread each)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with scratch("input") as tmp:
        print(f"writing {args.samples} x 3 JPEGs of 256 x 128 ...", flush=True)
        root, took = timed(lambda: write_tree(tmp / "rgbnt201", args.samples))
        print(f"  {took:.1f} s", flush=True)
        rows = measure(root, tmp / "cache", args)
    print(summary_block(
        f"input pipeline, RGBNT201 layout, {args.samples} train samples, batch {BATCH}, "
        f"{os.cpu_count()} CPUs, {args.threads} training thread(s)", rows,
        ["samples/s: three steady-state epochs of P x K batches; the pipeline decodes in workers",
         "and, for the unimodal job, opens the RGB files only; [load]: 1-minute load average"]))


def measure(root: Path, cache: Path, args: argparse.Namespace) -> list[tuple[str, str]]:
    w, rows = args.workers, []

    def row(name: str, text: str) -> None:
        rows.append((name, f"{text} [{load_text()}]"))
        print(*rows[-1], flush=True)

    base = Baseline(load(root, num_workers=0, augment="none"))
    load(root, cache_dir=str(cache / "warm"))
    best = {}
    for label, mods, target in (("3-modality", None, SPEEDUP_3),
                                ("unimodal rgb", ["rgb"], SPEEDUP_1)):
        def go(mods: list[str] | None = mods, **kw: object) -> tuple[float, dict[str, float]]:
            return base.ratio(lambda: epoch_rate(load(root, **kw), mods))

        (pipe, rp), (alone, ra), (aug, _) = (go(num_workers=w, augment="none"),
                                             go(num_workers=0, augment="none"),
                                             go(num_workers=w))
        (hit, rh), (hit_aug, _) = (go(cache_dir=str(cache / "warm"), augment="none"),
                                   go(cache_dir=str(cache / "warm")))
        best[label] = (rp, rh, target)
        row(f"{label} samples/s", f"pipeline {w} workers {pipe:.0f} = {both(rp)}, no workers "
            f"{alone:.0f} = {both(ra)}, {w} workers + reid recipe {aug:.0f}; cache hit "
            f"{hit:.0f} = {both(rh)} ({hit_aug:.0f} with the recipe, no workers)")
    for path, what in (("issue", "as the issue measured it"), ("today", "with today's reader")):
        rates = sorted(base.rates[path])
        row(f"synchronous path, {path}", f"{what}: median {median(rates):.0f} samples/s (range "
            f"{rates[0]:.0f}-{rates[-1]:.0f} over {len(rates)} epochs, one before each "
            "configuration; every ratio is to the epoch just before it)")
    for label, (files, cached, target) in best.items():
        row(f"{label} vs target", f"files decoded, {w} workers: {files['issue']:.2f}x the "
            f"issue's path (target >= {target}x: {at_least(files['issue'], target)}), "
            f"{files['today']:.2f}x today's ({at_least(files['today'], target)}); cache hit "
            f"{cached['issue']:.1f}x / {cached['today']:.1f}x")
    before = first_batch_s(lambda: load(root, validate="all", num_workers=0))
    miss = first_batch_s(lambda: load(root, cache_dir=str(cache / "fresh")))
    hit_s = first_batch_s(lambda: load(root, cache_dir=str(cache / "fresh")))
    row("dataset to first batch", f"before {before:.2f} s (validate=all), first job "
        f"{miss:.2f} s (builds the cache), second job {hit_s:.2f} s (cache hit; target "
        f"<= {HIT_TARGET_S:g} s: {'met' if hit_s <= HIT_TARGET_S else 'MISSED'})")
    fractions = [train_wait(load(root, num_workers=0)), train_wait(load(root, num_workers=w)),
                 train_wait(load(root, cache_dir=str(cache / "fresh")))]
    row("train step waiting for data", f"pipeline no workers {fractions[0]:.0%}, {w} workers "
        f"{fractions[1]:.0%}, cache hit {fractions[2]:.0%} (fusion_concat, cnn backbone, "
        "1 epoch, CPU)")
    return rows


if __name__ == "__main__":
    main()
