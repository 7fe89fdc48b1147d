"""Datasets: the contract, the registry and the built-in datasets.

``create_dataset(name, **kwargs)`` returns a validated :class:`DataBundle`;
``list_datasets()`` names what is registered.
"""

from __future__ import annotations

from collections.abc import Callable
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
from trainers.registry import Registry

DATASETS: Registry[Callable[..., DataBundle]] = Registry("dataset")
register_dataset = DATASETS.register


def create_dataset(name: str, **kwargs: Any) -> DataBundle:
    """Build a registered dataset by name; keyword arguments go to its factory."""
    _import_builtin()
    return DATASETS.get(name)(**kwargs)


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
    "list_datasets", "register_dataset",
]
