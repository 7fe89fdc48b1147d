"""Concurrent vs sequential unimodal jobs at equal total CPU.

Run from the repository root: ``python -m benchmarks.concurrency`` (``--help`` for options).

Two workloads, each trained by :func:`orchestrator.jobs.run_jobs` on one local Ray with
``num_cpus=2``, every job a Tune trial that trains itself with 1 CPU (so 1 torch thread),
TrainConfig defaults:

* ``modalities``: the M unimodal jobs of one seed (what :func:`orchestrator.jobs.train_unimodal`
  runs; avdigits has M = 2, audio and image). Their lengths differ (the audio backbone costs
  about twice the image one per epoch), so even perfect overlap cannot beat
  sum / max of the jobs' training times: that ceiling is printed beside the speed-up.
* ``equal``: two jobs of the same length (the first modality, seeds 0 and 1): whether the
  training itself overlaps, the target (>= 1.6x).

Each workload runs in two arms: concurrent (the orchestrator's default limit: 2 CPUs / 1 CPU =
2 at once) and sequential (the same jobs and per-job resources with ``limit=1``). Every arm
trains into a fresh storage, so nothing is reused, and starts its own trial processes: a
concurrent arm pays one process start (Python, Ray worker, torch and torch._dynamo imports,
about 4 CPU-seconds here) per job, a sequential arm one in all (Tune reuses its process).
Arms alternate their order over ``--repeats`` rounds. Ray's own start-up is paid once and left
out. The speed-up is sequential wall / concurrent wall.

For reference, the ``equal`` jobs also run without Ray, as two plain Python processes (each
imports torch and trains one job with 1 thread), one after the other and both at once: what
the 2 cores give when nothing else (Ray's own processes, the driver) shares them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import benchmarks as bench
from orchestrator.jobs import run_jobs, unimodal_jobs
from orchestrator.train_fn import DataRef, JobResources, JobSpec
from trainers.config import TrainConfig
from trainers.data import DataBundle

ARMS = {"sequential": 1, "concurrent": None}  # run_jobs limit; None: as many as fit
TARGET = 1.6


def workload(name: str, data: DataBundle, cfg: TrainConfig, store: object) -> list[JobSpec]:
    """The jobs of a workload (see the module docstring), in a fresh store."""
    ref = DataRef(bench.DATASET)
    if name == "modalities":
        return list(unimodal_jobs(ref, data, cfg, [0], store).values())
    first = data.spec.modality_names[0]
    jobs = unimodal_jobs(ref, data, cfg, [0, 1], store)
    return [job for (_, m), job in jobs.items() if m == first]


def run_arm(name: str, limit: int | None, data: DataBundle,
            cfg: TrainConfig) -> tuple[float, list[float]]:
    """(wall time, each job's in-loop training time) of one arm of a workload."""
    with bench.scratch("conc") as store:
        todo = workload(name, data, cfg, store)
        records, wall = bench.timed(lambda: run_jobs(todo, JobResources(1.0), limit))
    return wall, [r.wall_time_s for r in records]


def plain_arm(limit: int | None, epochs: int) -> float:
    """Wall time of the ``equal`` jobs as plain processes (no Ray), ``limit`` at a time."""
    cmds = [[sys.executable, "-m", "benchmarks.concurrency", "--plain-job", str(seed),
             "--epochs", str(epochs)] for seed in (0, 1)]
    start = time.perf_counter()
    if limit == 1:
        for cmd in cmds:
            subprocess.run(cmd, check=True)
    else:
        for proc in [subprocess.Popen(cmd) for cmd in cmds]:
            if proc.wait() != 0:
                raise SystemExit(f"plain job failed: {proc.args}")
    return time.perf_counter() - start


def plain_job(seed: int, epochs: int) -> None:
    """One ``equal`` job in this process, no Ray: 1 torch thread, nothing written."""
    from orchestrator.jobs import unimodal_configs
    from trainers.api import train

    data = DataRef(bench.DATASET).load()
    base = TrainConfig(epochs=epochs, num_threads=1, seed=seed)
    train(data, unimodal_configs(data, base)[data.spec.modality_names[0]])


def arm_order(round_index: int) -> list[str]:
    """Alternate which arm goes first, round by round."""
    names = list(ARMS)
    return names if round_index % 2 == 0 else names[::-1]


def speedup(sequential_s: float, concurrent_s: float) -> float:
    return sequential_s / concurrent_s


def ceiling(alone_s: list[float]) -> float:
    """The best speed-up jobs of these lengths can reach at once: sum / longest."""
    return sum(alone_s) / max(alone_s)


def parse_args() -> argparse.Namespace:
    parser = bench.make_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=60,
                        help="epochs per job (default 60: about 14 s of audio training)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of both arms of both workloads, order alternating "
                             "(default 3)")
    parser.add_argument("--plain-job", type=int, default=None, help=argparse.SUPPRESS)
    bench.add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 2, 1
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1 but got {args.repeats}")
    return args


def main() -> None:
    args = parse_args()
    if args.plain_job is not None:
        plain_job(args.plain_job, args.epochs)
        return
    health = bench.apply_health_check(args.health_check_s)
    cfg = TrainConfig(epochs=args.epochs)
    data = DataRef(bench.DATASET).load()
    names = ("modalities", "equal")
    walls = {(w, a): [] for w in (*names, "plain") for a in ARMS}
    loops = {(w, a): [] for w in names for a in ARMS}
    with bench.local_ray(num_cpus=2) as ray_times:
        for i in range(args.repeats):
            for name in names:
                for arm in arm_order(i):
                    wall, per_job = run_arm(name, ARMS[arm], data, cfg)
                    walls[name, arm].append(wall)
                    loops[name, arm].append(per_job)
                    print(f"  round {i + 1} {name:<10} {arm:<10}: {wall:6.1f} s (jobs: "
                          f"{', '.join(f'{s:.1f}' for s in per_job)} s)", flush=True)
            for arm in arm_order(i):
                walls["plain", arm].append(plain_arm(ARMS[arm], args.epochs))
                print(f"  round {i + 1} plain      {arm:<10}: {walls['plain', arm][-1]:6.1f} s",
                      flush=True)
    rows = [("jobs", f"unimodal jobs on {bench.DATASET}, {cfg.epochs} epochs, 1 CPU / 1 thread "
                     "each"),
            ("cluster", f"local Ray, 2 CPUs (started in {bench.fmt_s(ray_times['startup_s'])}, "
                        "not counted)")]
    for name in names:
        rows += report(name, walls, loops)
    plain_seq = bench.median(walls["plain", "sequential"])
    plain_conc = bench.median(walls["plain", "concurrent"])
    rows.append(("equal, no Ray", f"{bench.fmt_s(plain_seq)} one after the other, "
                                  f"{bench.fmt_s(plain_conc)} at once: "
                                  f"{speedup(plain_seq, plain_conc):.2f}x (plain processes, "
                                  "what the 2 cores give)"))
    notes = [health, f"median of {args.repeats} round(s), arm order alternating",
             "load average (1 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
             "On a GPU cluster with one GPU per job the jobs do not share a device; the",
             "ceiling is then sum / longest of the jobs' lengths, as here."]
    title = "benchmarks.concurrency: unimodal jobs at once vs one after the other"
    print(bench.summary_block(title, rows, notes))


def report(name: str, walls: dict, loops: dict) -> list[tuple[str, str]]:
    seq, conc = bench.median(walls[name, "sequential"]), bench.median(walls[name, "concurrent"])
    gain = speedup(seq, conc)
    jobs = len(loops[name, "sequential"][0])
    alone = [bench.median([r[j] for r in loops[name, "sequential"]]) for j in range(jobs)]
    side = [bench.median([r[j] for r in loops[name, "concurrent"]]) for j in range(jobs)]
    best = ceiling(alone)
    target = f"; target >= {TARGET:g}x: {'met' if gain >= TARGET else 'MISSED'}" \
        if name == "equal" else ""

    def runs(arm: str) -> str:
        return ", ".join(bench.fmt_s(w) for w in walls[name, arm])

    return [
        (f"{name}: sequential", f"{bench.fmt_s(seq)}  (runs: {runs('sequential')})"),
        (f"{name}: concurrent", f"{bench.fmt_s(conc)}  (runs: {runs('concurrent')})"),
        (f"{name}: speed-up", f"{gain:.2f}x (ceiling for these job lengths {best:.2f}x; "
                              f"{100 * gain / best:.0f}% of it{target})"),
        (f"{name}: training per job", "alone " + " / ".join(bench.fmt_s(s) for s in alone)
         + ", side by side " + " / ".join(bench.fmt_s(s) for s in side)
         + " (each concurrent job also pays its own process start)"),
    ]


if __name__ == "__main__":
    main()
