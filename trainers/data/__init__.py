"""Datasets: the contract, the registry and the built-in datasets.

``create_dataset(name, **kwargs)`` returns a validated :class:`DataBundle`;
``list_datasets()`` names what is registered.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

from trainers.data.contract import (
    DataBundle,
    DataError,
    DatasetSpec,
    FileDataset,
    ModalitySpec,
    MultimodalDataset,
    TensorDataset,
    collate,
    iterate_batches,
)
from trainers.data.identity import covers_content, dataset_identity, factory_arguments
from trainers.registry import Registry

DATASETS: Registry[Callable[..., DataBundle]] = Registry("dataset")
register_dataset = DATASETS.register


def create_dataset(name: str, **kwargs: Any) -> DataBundle:
    """Build a registered dataset by name; keyword arguments go to its factory, except
    ``augment`` (the train recipe, see ``trainers.data.augment``) and ``num_workers`` (see
    ``trainers.data.pipeline``), which every dataset takes. The bundle's ``spec.identity``
    names the data for run names (:mod:`trainers.data.identity`): the recipe is part of it,
    the settings that change speed only (``num_workers``, ``cache_dir``) are not."""
    from trainers.data.pipeline import RUNTIME_ARGS, configure

    _import_builtin()
    factory = DATASETS.get(name)
    augment, workers = kwargs.pop("augment", "default"), kwargs.pop("num_workers", None)
    check_arguments(name, factory, kwargs)
    bundle = configure(factory(**kwargs), name, augment, workers)
    args = {k: v for k, v in factory_arguments(factory, kwargs).items() if k not in RUNTIME_ARGS}
    ident = dataset_identity(name, {**args, "augment": augment}, bundle.spec.fingerprint,
                             drop_locations=covers_content(bundle.splits))
    return bundle.with_identity(ident)


def with_cache_default(name: str, kwargs: dict[str, Any], storage_root: object) -> dict[str, Any]:
    """``kwargs`` plus ``cache_dir=<storage root>/data-cache`` when dataset ``name`` takes a
    ``cache_dir`` and none was given (``cache_dir=null`` keeps the cache off): every job, seed
    and trial on one storage then shares one preprocessing cache (``trainers.data.cache``)."""
    from trainers.data.cache import default_cache_dir

    _import_builtin()
    if "cache_dir" in kwargs or "cache_dir" not in inspect.signature(DATASETS.get(name)).parameters:
        return dict(kwargs)
    return {**kwargs, "cache_dir": default_cache_dir(storage_root)}  # type: ignore[arg-type]


def check_arguments(name: str, factory: Callable[..., DataBundle], kwargs: dict,
                    complete: bool = True) -> None:
    """An unknown or missing factory argument is a one-line :class:`DataError`, not a
    ``TypeError`` from deep inside the factory (``complete=False``: unknown ones only, for
    arguments that the command line may still add to)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise DataError(f"dataset {name!r} has no argument {unknown[0]!r}; its arguments: "
                        f"{', '.join(params) or 'none'}")
    missing = [p for p, v in params.items() if v.default is v.empty and p not in kwargs
               and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY) and complete]
    if missing:
        raise DataError(f"dataset {name!r} needs the argument {missing[0]!r} (command line: "
                        f"--dataset-arg {missing[0]}=VALUE)")


def parse_dataset_args(items: Sequence[str]) -> dict[str, Any]:
    """``["root=/data/RGBNT201", "image_size=[256,128]"]`` -> keyword arguments; values are
    read as JSON (numbers, booleans, lists) and otherwise kept as strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"--dataset-arg {item!r} is not KEY=VALUE; e.g. "
                            "--dataset-arg root=/data/RGBNT201")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def list_datasets() -> list[str]:
    _import_builtin()
    return DATASETS.names()


def _import_builtin() -> None:
    import trainers.data.av_benchmarks  # noqa: F401
    import trainers.data.avdigits  # noqa: F401
    import trainers.data.manifest  # noqa: F401
    import trainers.data.reid_benchmarks  # noqa: F401
    import trainers.data.reid_synth  # noqa: F401
    import trainers.data.synthetic  # noqa: F401


__all__ = [
    "DATASETS", "DataBundle", "DataError", "DatasetSpec", "FileDataset", "ModalitySpec",
    "MultimodalDataset", "TensorDataset", "collate", "create_dataset", "iterate_batches",
    "list_datasets", "parse_dataset_args", "register_dataset", "with_cache_default",
]
