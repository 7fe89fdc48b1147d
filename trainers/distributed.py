"""Data-parallel training inside the one loop, when ``torch.distributed`` is initialised.

Ray Train's ``TorchTrainer`` with several workers initialises a process group (gloo on CPU,
NCCL on GPU) before the training function runs; plain ``python -m trainers`` never does, and
then everything here is a no-op. With ``W`` workers, every worker draws the same global batches
(same seed), keeps its ``1/W`` share of each (:func:`shard`), and after ``backward()`` the
gradients are averaged over workers (:func:`average_gradients`), so one step equals one step on
the global batch (up to BatchNorm, whose batch statistics stay per worker). Every worker holds
the same weights and evaluates the whole validation split, so selection agrees everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(batches: Sequence[Sequence[int]]) -> list[list[int]]:
    """This worker's share of each global batch (strided, so every share is non-empty while a
    batch has at least as many samples as there are workers; smaller batches are dropped)."""
    rank, size = world()
    if size == 1:
        return [list(map(int, b)) for b in batches]
    return [[int(i) for i in b][rank::size] for b in batches if len(b) >= size]


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce (mean) of every gradient over the workers; a no-op for one worker."""
    _, size = world()
    if size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(size)
