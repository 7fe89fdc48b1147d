"""Data-parallel training in the one loop: 2 workers (gloo, each its share of every global
batch, gradients averaged) end where 1 worker with the same global batch ends.

Stated tolerance: weights within 1e-4 and validation accuracy within 1 point. The only
differences allowed are floating-point summation order and a last partial batch whose two
shares differ in size by one sample (mean of the two means instead of the global mean).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.api import evaluate_splits, train
from trainers.config import TrainConfig
from trainers.data import create_dataset
from trainers.distributed import shard, world

CFG = TrainConfig(strategy="fusion_concat", epochs=3, batch_size=32, embed_dim=8,
                  hidden_dim=16, lr=3e-3, num_threads=1, device="cpu")
DATA = {"n": 160, "dim": 6}


def _worker(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=2)
    try:
        data = create_dataset("synthetic_both", **DATA)
        strategy, _ = train(data, CFG)
        if rank == 0:
            torch.save({"state": strategy.state_dict(),
                        "val": evaluate_splits(strategy, data, ["val"])["val"]},
                       f"{folder}/rank0.pt")
        dist.barrier()  # rank 1 must not tear gloo down while rank 0 still evaluates: an
        # early teardown aborted rank 1 ("terminate called without an active exception")
    finally:
        dist.destroy_process_group()


def test_two_workers_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    data = create_dataset("synthetic_both", **DATA)
    single, _ = train(data, CFG)
    single_val = evaluate_splits(single, data, ["val"])["val"]["fused"]["accuracy"]
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)
    two = torch.load(tmp_path / "rank0.pt", weights_only=True)
    diffs = [float((two["state"][k] - v).abs().max()) for k, v in single.state_dict().items()
             if v.is_floating_point()]
    assert max(diffs) < 1e-4, max(diffs)
    assert abs(two["val"]["fused"]["accuracy"] - single_val) <= 0.01


def test_shares_outside_a_process_group_are_the_whole_batches() -> None:
    assert world() == (0, 1)
    assert shard([[5, 1, 2], [7]]) == [[5, 1, 2], [7]]
