"""Per-job overhead of the orchestrator: unimodal jobs through Ray vs the same plain loop.

Run from the repository root: ``python -m benchmarks.overhead`` (``--help`` for options).

Both sides train the same unimodal models (default: the ``audio`` modality of the embedded
avdigits data, TrainConfig defaults, ``--jobs`` seeds) with ONE torch thread, one job after the
other, for two epoch counts E1 < E2, and fit ``wall per job = fixed + per_epoch * epochs``
through the points; that separates the fixed cost of a job from the cost of each epoch.

* plain: :func:`trainers.runs.train_or_reuse` of each job into a fresh store, in this process
  (warmed up once): :func:`trainers.api.train` plus the val/test evaluation and the save that a
  job does too, so the difference is Ray's alone.
* orchestrator: ONE :func:`orchestrator.jobs.run_jobs` call with the ``--jobs`` jobs (each a Tune
  trial that trains itself with 1 CPU and ``num_threads=1``, one at a time, the trial process
  reused from job to job) into a fresh storage, on a local Ray (``num_cpus=2``) that this script
  starts once; Ray's own start-up and shut-down are reported separately. A batch's first job
  also pays the start of its trial process (torch import): reported apart as the cold job.

The orchestrator's per-epoch cost includes its reports (``tune.report`` every epoch, the loop
state saved at most once per ``FUSION_REPORT_INTERVAL_S``, default 5 s), which is real
overhead. A second per-epoch estimate comes from the loop's own per-epoch timestamps
(``history[*].wall_time_s`` in each run's ``result.json``), which does not suffer from the fixed
cost's jitter. Targets (issues): per-epoch <= 1.05x, fixed <= 3 s per job.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

import torch

from benchmarks import (
    DATASET,
    add_common_args,
    apply_health_check,
    fmt_s,
    local_ray,
    make_parser,
    median,
    scratch,
    summary_block,
    timed,
    verdict,
)
from orchestrator.jobs import run_jobs
from orchestrator.train_fn import DataRef, JobResources, make_job
from orchestrator.worker import report_interval_s
from trainers.config import TrainConfig
from trainers.data import DataBundle
from trainers.runs import RunRecord, train_or_reuse

PER_EPOCH_TARGET = 1.05
FIXED_TARGET_S = 3.0
Point = tuple[int, float]  # (epochs, wall seconds)


def fit_line(points: Sequence[Point]) -> tuple[float, float]:
    """Least-squares ``(fixed, per_epoch)`` of ``wall = fixed + per_epoch * epochs``."""
    if len({e for e, _ in points}) < 2:
        raise ValueError(f"need points at two epoch counts at least but got {list(points)}")
    n = len(points)
    mean_e = sum(e for e, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    slope = (sum((e - mean_e) * (t - mean_t) for e, t in points)
             / sum((e - mean_e) ** 2 for e, _ in points))
    return mean_t - slope * mean_e, slope


def loop_epoch_s(walls: Sequence[float]) -> float:
    """Seconds per epoch from the loop's cumulative per-epoch timestamps (first epoch left out:
    it carries the warm-up, and the interval between two epoch ends is one whole epoch)."""
    if len(walls) < 3:
        raise ValueError(f"need 3 epochs at least to time an epoch but got {len(walls)}")
    return (walls[-1] - walls[1]) / (len(walls) - 2)


def epoch_verdict(orch_s: float, plain_s: float) -> str:
    """The per-epoch target's verdict; a slope <= 0 means the jitter of the fixed cost swamped
    the epochs (too few epochs between E1 and E2), not that the target is met."""
    if orch_s <= 0 or plain_s <= 0:
        return "not measurable, the fixed cost's jitter exceeds the epochs' time: widen --epochs"
    return verdict(orch_s / plain_s, PER_EPOCH_TARGET)


def history_walls(record: RunRecord) -> list[float]:
    return [float(h["wall_time_s"]) for h in record.history()]


def configs(cfg: TrainConfig, jobs: int) -> list[TrainConfig]:
    return [cfg.replace(seed=seed) for seed in range(jobs)]


def plain_run(data: DataBundle, cfgs: Sequence[TrainConfig]) -> tuple[float, list[float]]:
    """Wall time of the jobs one after the other, and the last job's epoch timestamps."""
    with scratch("plain") as store:
        records, wall = timed(lambda: [train_or_reuse(data, c, store) for c in cfgs])
        return wall, history_walls(records[-1])


def ray_run(data: DataBundle, cfgs: Sequence[TrainConfig]) -> tuple[float, list[float]]:
    """Wall time (as the caller of ``run_jobs`` sees it) of the jobs, one at a time, and the
    last job's epoch timestamps."""
    with scratch("ray") as store:
        jobs = [make_job(DataRef(DATASET), data.spec, c, store, label="overhead") for c in cfgs]
        records, wall = timed(lambda: run_jobs(jobs, JobResources(cpus_per_worker=1.0), limit=1))
        return wall, history_walls(records[-1])


def measure(run: Callable[[DataBundle, Sequence[TrainConfig]], tuple[float, list[float]]],
            data: DataBundle, cfg: TrainConfig, epochs: Sequence[int], repeats: int,
            jobs: int) -> tuple[list[Point], list[float]]:
    """All (epochs, wall per job) points and the in-loop per-epoch times of the longer runs."""
    points, per_epoch = [], []
    for _ in range(repeats):
        for e in epochs:
            wall, walls = run(data, configs(cfg.replace(epochs=e), jobs))
            points.append((e, wall / jobs))
            print(f"  {run.__name__:<9} {jobs} x {e:>3} epochs: {wall:6.2f} s", flush=True)
            if e == max(epochs):
                per_epoch.append(loop_epoch_s(walls))
    return points, per_epoch


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--modality", default="audio", help="the unimodal job's modality")
    parser.add_argument("--epochs", type=int, nargs=2, default=(2, 20), metavar=("E1", "E2"),
                        help="the two epoch counts of the line fit (default 2 20)")
    parser.add_argument("--jobs", type=int, default=4,
                        help="jobs per batch, one seed each (default 4)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per epoch count and side (default 2)")
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = (2, 4), 1
    if args.quick:
        args.jobs = min(args.jobs, 2)
    if (not 3 <= max(args.epochs) or args.epochs[0] == args.epochs[1] or args.repeats < 1
            or args.jobs < 1):
        parser.error(f"need two different epoch counts, the larger >= 3, --repeats >= 1 and "
                     f"--jobs >= 1 but got --epochs {args.epochs} --repeats {args.repeats} "
                     f"--jobs {args.jobs}")
    return args


def main() -> None:
    args = parse_args()
    health = apply_health_check(args.health_check_s)
    torch.set_num_threads(1)
    data, load_s = timed(lambda: DataRef(DATASET).load())
    cfg = TrainConfig(strategy="unimodal", params={"modality": args.modality}, num_threads=1)
    plain_run(data, [cfg.replace(epochs=1)])  # warm-up (lazy torch init), not timed
    print(f"plain loop ({args.modality}, 1 torch thread):", flush=True)
    plain = measure(plain_run, data, cfg, args.epochs, args.repeats, args.jobs)
    with local_ray(num_cpus=2) as ray_times:
        print(f"orchestrator (Ray started in {ray_times['startup_s']:.1f} s):", flush=True)
        orch = measure(ray_run, data, cfg, args.epochs, args.repeats, args.jobs)
        one = [cfg.replace(epochs=min(args.epochs), seed=args.jobs)]
        ray_times["cold_s"] = ray_run(data, one)[0] - plain_run(data, one)[0]
    print(report(plain, orch, ray_times, health, load_s, args))


def report(plain: tuple[list[Point], list[float]], orch: tuple[list[Point], list[float]],
           ray_times: dict[str, float], health: str, load_s: float,
           args: argparse.Namespace) -> str:
    notes = [health,
             f"{args.repeats} run(s) per epoch count and side; medians shown, fit on all points",
             f"{args.jobs} jobs per batch, one at a time; the plain side ran warm, a batch's "
             "first job starts its trial process (in the fixed cost, amortised over the batch)",
             "load average (1 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
             f"a job reports to Tune and saves its loop state at most once per "
             f"FUSION_REPORT_INTERVAL_S={report_interval_s():g} s, and after its last epoch"]
    return summary_block("benchmarks.overhead: one job via the orchestrator vs plain PyTorch",
                         rows(plain, orch, ray_times, load_s, args), notes)


def rows(plain: tuple[list[Point], list[float]], orch: tuple[list[Point], list[float]],
         ray_times: dict[str, float], load_s: float,
         args: argparse.Namespace) -> list[tuple[str, str]]:
    (p_fixed, p_epoch), (o_fixed, o_epoch) = fit_line(plain[0]), fit_line(orch[0])
    fixed = o_fixed - p_fixed
    loop_ratio = median(orch[1]) / median(plain[1])
    walls = {side: {e: median([t for ep, t in pts if ep == e]) for e in args.epochs}
             for side, pts in (("plain", plain[0]), ("ray", orch[0]))}
    return [
        ("job", f"unimodal:{args.modality} on {DATASET}, TrainConfig defaults, 1 thread/1 CPU"),
        ("wall, plain / orchestrator", " ; ".join(
            f"{e} ep {walls['plain'][e]:.2f} / {walls['ray'][e]:.2f} s" for e in args.epochs)),
        ("fixed overhead per job", f"{fixed:.1f} s (fit, batch of {args.jobs}; target <= "
                                   f"{FIXED_TARGET_S:g} s: {verdict(fixed, FIXED_TARGET_S)})"),
        ("a batch of one job", f"{ray_times['cold_s']:.1f} s more than plain (cold trial "
                               "process: start, torch import)"),
        ("per-epoch, plain / orch", f"{p_epoch:.3f} / {o_epoch:.3f} s (fit)"),
        ("per-epoch ratio (fit)", f"{o_epoch / p_epoch:.2f}x (target <= {PER_EPOCH_TARGET:g}x: "
                                  f"{epoch_verdict(o_epoch, p_epoch)})"),
        ("per-epoch ratio (in-loop)", f"{loop_ratio:.2f}x ({median(plain[1]):.3f} / "
                                      f"{median(orch[1]):.3f} s, incl. reports; "
                                      f"{verdict(loop_ratio, PER_EPOCH_TARGET)})"),
        ("Ray start / shutdown", f"{fmt_s(ray_times['startup_s'])} / "
                                 f"{fmt_s(ray_times['shutdown_s'])} (once per script)"),
        ("dataset load", f"{load_s:.2f} s (once per trial process, kept for its next jobs)"),
    ]


if __name__ == "__main__":
    main()
