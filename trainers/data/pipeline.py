"""The input pipeline: how the one training loop gets its batches.

Every batch is made by one :class:`BatchMaker` from a key ``(seed, batch number, indices)``:
it reads only the modalities the strategy uses (a unimodal RGB job never opens the NIR or
TIR files), collates, and applies the train split's augmentation recipe when the key carries
a seed. In-memory datasets (and memory-mapped caches) are gathered by index in the calling
thread, as before. File-backed datasets are decoded ahead of the training step in worker
processes (``torch.utils.data.DataLoader`` with ``batch_size=None``: each worker makes whole
batches, so P x K reid batches and shuffles are decided in the main process and the order
never depends on the number of workers). Workers persist across epochs; memory is pinned
when CUDA is available.

``num_workers`` (a dataset argument; None = automatic): for file-backed splits when CUDA is
available, ``min(torch.get_num_threads(), batches in the epoch)`` (the job's CPUs: the Ray
worker and ``TrainConfig.num_threads`` set the thread count), so the GPU does not wait for
decoding; 0 (in the calling thread) for in-memory and cached splits, and on CPU-only
machines, where the training step needs the same cores and workers did not beat decoding in
the training thread on our 2-core machine (measured: ``benchmarks.input_pipeline``). It
changes speed, never the batches: it is not part of a run's identity.

Image loaders with a raw form (the reid loaders) hand over uint8 batches, a quarter of the
float bytes, normalised per batch in the training process (:meth:`BatchMaker.finish`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from trainers.data.augment import Recipe, make_recipe
from trainers.data.contract import DataBundle, DataError, MultimodalDataset, collate

RUNTIME_ARGS = ("num_workers", "cache_dir")  # dataset arguments that change speed, not data
Key = tuple[int | None, int, list[int]]


def check_workers(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"num_workers must be an int >= 0 (or None for automatic) but got "
                        f"{value!r}; 0 decodes in the training process")
    return value


def configure(bundle: DataBundle, dataset: str, augment: object = "default",
              num_workers: object = None) -> DataBundle:
    """Attach the train recipe and the worker setting to a freshly built bundle; the recipe
    is appended to ``spec.recipe`` so result rows record it."""
    workers = check_workers(num_workers)
    recipe = make_recipe(augment, bundle.spec, dataset)
    spec = bundle.spec
    if recipe.steps:
        spec = replace(spec, recipe=f"{spec.recipe}; {recipe.describe()}".lstrip("; "))
    for ds in bundle.splits.values():
        ds.spec = spec
        ds.num_workers = workers
    bundle.splits["train"].augment = recipe if recipe.steps else None
    if spec is bundle.spec:
        return bundle
    # The recipe is not part of the data's fingerprint: keep it instead of hashing every split
    # again (``replace`` would re-run DataBundle's fingerprinting).
    out = copy.copy(bundle)
    object.__setattr__(out, "spec", spec)
    return out


class BatchMaker(torch.utils.data.Dataset):
    """Makes one batch from a key; the same object runs in the loop's thread or in workers.

    A split whose loader has a raw form (``loader.finish``: the reid image loaders) is read
    as uint8 images and marked ``raw``; :meth:`finish` normalises the whole batch and applies
    the recipe in the training process, so workers send a quarter of the bytes."""

    def __init__(self, ds: MultimodalDataset, modalities: Sequence[str],
                 recipe: Recipe | None) -> None:
        self.ds, self.modalities, self.recipe = ds, tuple(modalities), recipe

    def __getitem__(self, key: Key) -> dict:
        batch = self.gather(key[2])
        return batch if batch.get("raw") else self.finish(batch, key)

    __call__ = __getitem__

    def gather(self, idx: list[int]) -> dict:
        if hasattr(self.ds, "batch"):  # in memory / memory-mapped: gather by index
            batch = self.ds.batch(torch.as_tensor(idx, dtype=torch.long))
            batch["x"] = {m: batch["x"][m] for m in self.modalities}
            return batch
        loader = raw_loader(self.ds)
        if loader is None:
            return collate([self.ds.get(i, self.modalities) for i in idx])
        mods = self.modalities
        batch = collate([self.ds.item(i, self.ds.validate_sample(i, loader.raw(i, mods), mods))
                         for i in idx])
        return {**batch, "raw": True}

    def finish(self, batch: dict, key: Key) -> dict:
        """Normalise a raw batch, then augment (train batches: the key carries a seed)."""
        if batch.pop("raw", False):
            batch["x"] = raw_loader(self.ds).finish(batch["x"])  # type: ignore[union-attr]
        seed, number, _ = key
        if self.recipe is not None and seed is not None:
            batch["x"] = self.recipe.apply(batch["x"], seed, number)
        return batch


def raw_loader(ds: MultimodalDataset) -> Any:
    """The split's loader when it can read uint8 images (``loader.finish`` set), else None."""
    loader = getattr(ds, "loader", None)
    return loader if getattr(loader, "finish", None) is not None else None


class KeySampler(torch.utils.data.Sampler):
    """The keys of the current epoch; replaced each epoch so workers can persist."""

    def __init__(self) -> None:
        self.keys: list[Key] = []

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def resolve_workers(ds: MultimodalDataset, num_batches: int) -> int:
    """The explicit setting, else worker processes only where there is decoding to do and a
    GPU to keep busy."""
    n = getattr(ds, "num_workers", None)
    if n is not None:
        return n
    if hasattr(ds, "batch") or not torch.cuda.is_available():
        return 0
    return max(0, min(torch.get_num_threads(), num_batches))


def used_modalities(ds: MultimodalDataset, modalities: Sequence[str] | None) -> tuple[str, ...]:
    if modalities is None:
        return ds.spec.modality_names
    for m in modalities:
        ds.spec.modality(m)  # unknown names raise with the list
    return tuple(m for m in ds.spec.modality_names if m in modalities)


def stream(ds: MultimodalDataset, index_batches: Iterable[Sequence[int]],
           modalities: Sequence[str] | None = None, seed: int | None = None) -> Iterator[dict]:
    """Batches of ``ds`` in the order of ``index_batches``; ``seed`` (training only) turns
    on the split's augmentation recipe, seeded per (seed, batch, position)."""
    mods = used_modalities(ds, modalities)
    recipe = getattr(ds, "augment", None) if seed is not None else None
    keys = [(seed, b, [int(i) for i in idx]) for b, idx in enumerate(index_batches)]
    maker = BatchMaker(ds, mods, recipe)
    workers = resolve_workers(ds, len(keys))
    if workers == 0:
        source: Iterable[dict] = map(maker, keys)
    else:
        source, sampler = _feed(ds, maker, workers)
        sampler.keys = keys
    try:
        for key, batch in zip(keys, source, strict=True):
            yield maker.finish(batch, key) if batch.get("raw") else batch
    except DataError as e:  # keep the one-line message, not the worker's traceback
        raise DataError(str(e).strip().splitlines()[-1].partition("DataError: ")[2]
                        or str(e)) from None


def _feed(ds: MultimodalDataset, maker: BatchMaker,
          workers: int) -> tuple[torch.utils.data.DataLoader, KeySampler]:
    """One persistent DataLoader per (split, modalities, augmented, workers), kept on the
    split so its workers live as long as the data (and are not pickled with it).

    The loader's batch maker reads a shallow copy of the split without the feeds, so nothing
    the loader holds leads back to the split: when the last reference to the split goes, the
    loader goes at once and stops its workers in milliseconds. Through a reference cycle they
    would wait for Python's cycle collector, which stops persistent workers by waiting out
    DataLoader's 5 s status timeout per worker (measured: 30 s of one collection after six
    datasets with 2 workers each)."""
    feeds: dict[Any, tuple[torch.utils.data.DataLoader, KeySampler]] = ds.__dict__.setdefault(
        "_feeds", {})
    key = (maker.modalities, maker.recipe is not None, workers)
    if key not in feeds:
        sampler = KeySampler()
        split = copy.copy(ds)
        split.__dict__.pop("_feeds", None)
        loader = torch.utils.data.DataLoader(
            BatchMaker(split, maker.modalities, maker.recipe), batch_size=None,
            sampler=sampler, num_workers=workers,
            persistent_workers=True, pin_memory=torch.cuda.is_available())
        feeds[key] = (loader, sampler)
    return feeds[key]
