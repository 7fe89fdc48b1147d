"""Ray Data's image reader vs our input pipeline, on the same RGBNT201-layout tree, in one run.

Run from the repository root: ``python -m benchmarks.ray_data_reader`` (``--help`` for options).

Why the pipeline is ``torch.utils.data`` workers and a preprocessing cache rather than Ray
Data: this measures what a unimodal RGB job would get from each, on a local Ray with 2 CPUs.
Ray Data reads the ``RGB`` folder with ``ray.data.read_images(size=..., mode="RGB")`` and
``iter_torch_batches`` (its best case: images only, no labels, no P x K identity order, no
per-split validation); ours is the unimodal job of ``benchmarks.input_pipeline`` (2 workers
decoding the RGB files of P x K batches, labels and ids included). Samples/s over epochs
after a first one (Ray Data plans and starts its operators in the first; our workers start
in theirs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks import make_parser, scratch, summary_block, timed
from benchmarks.input_pipeline import BATCH, RGBNT201_TRAIN, epoch_rate, load, rate, write_tree


def ray_data_rate(folder: Path, epochs: int) -> float:
    """Samples/s of ``iter_torch_batches`` over ``epochs`` epochs after a first one."""
    import ray

    ds = ray.data.read_images(str(folder), size=(256, 128), mode="RGB")
    n, t0 = 0, 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            n, t0 = 0, time.perf_counter()
        for batch in ds.iter_torch_batches(batch_size=BATCH):
            n += len(batch["image"])
    return rate(n, time.perf_counter() - t0)


def main() -> None:
    p = make_parser(__doc__ or "")
    p.add_argument("--samples", type=int, default=RGBNT201_TRAIN // 8,
                   help="training samples in the generated tree (default 598 = 4787 / 8)")
    p.add_argument("--epochs", type=int, default=3, help="measured epochs after a first one")
    args = p.parse_args()
    import ray

    with scratch("ray-data") as tmp:
        root = write_tree(tmp / "rgbnt201", args.samples)
        ours = epoch_rate(load(root, num_workers=2, augment="none"), ["rgb"], args.epochs)
        info, started = timed(lambda: ray.init(num_cpus=2, include_dashboard=False,
                                               log_to_driver=False))
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            theirs = ray_data_rate(root / "train_171" / "RGB", args.epochs)
        finally:
            ray.shutdown()
    rows = [("ours (2 workers, P x K)", f"{ours:.0f} samples/s"),
            ("ray.data.read_images", f"{theirs:.0f} samples/s = {theirs / ours:.2f}x ours "
                                     f"(Ray started in {started:.1f} s, not counted)")]
    print(summary_block(f"unimodal RGB reading, {args.samples} samples 256 x 128, "
                        f"{os.cpu_count()} CPUs, {args.epochs} epochs after a first", rows))


if __name__ == "__main__":
    main()
