"""Concurrent vs sequential modality jobs: the unimodal jobs of one seed at equal total CPU.

Run from the repository root: ``python -m benchmarks.concurrency`` (``--help`` for options).

The M unimodal jobs of one seed (M = number of modalities; avdigits has 2) are trained by
:func:`orchestrator.jobs.run_jobs` on a local Ray with ``num_cpus=2``, each job a Tune trial that
trains itself with 1 CPU (so 1 torch thread), TrainConfig defaults:

* concurrent: the orchestrator's default limit (as many jobs as fit: 2 CPUs / 1 CPU = 2 at once),
  which is what :func:`orchestrator.jobs.train_unimodal` does;
* sequential: the same jobs and per-job resources with ``limit=1`` (one job at a time).

Every arm trains into a fresh storage, so nothing is reused. Arms alternate their order over
``--repeats`` rounds, so that neither always runs on a colder Ray. Ray's own start-up is paid once
and left out. The speed-up is sequential wall / concurrent wall; the ideal is M.
"""

from __future__ import annotations

import argparse
import os

import benchmarks as bench
from orchestrator.jobs import run_jobs, unimodal_jobs
from orchestrator.train_fn import DataRef, JobResources
from trainers.config import TrainConfig
from trainers.data import DataBundle

ARMS = {"sequential": 1, "concurrent": None}  # run_jobs limit; None: as many as fit


def run_arm(limit: int | None, data: DataBundle, cfg: TrainConfig,
            seed: int) -> tuple[float, float]:
    """(wall time, summed in-loop training time) of the unimodal jobs of ``seed``."""
    with bench.scratch("conc") as store:
        jobs = unimodal_jobs(DataRef(bench.DATASET), data, cfg, [seed], store)
        todo = list(jobs.values())
        records, wall = bench.timed(lambda: run_jobs(todo, JobResources(1.0), limit))
    return wall, sum(r.wall_time_s for r in records)


def arm_order(round_index: int) -> list[str]:
    """Alternate which arm goes first, round by round."""
    names = list(ARMS)
    return names if round_index % 2 == 0 else names[::-1]


def speedup(sequential_s: float, concurrent_s: float) -> float:
    return sequential_s / concurrent_s


def parse_args() -> argparse.Namespace:
    parser = bench.make_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=40,
                        help="epochs per job (default 40: about 8 s of training, so that a "
                             "trial process's start does not drown it)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of both arms, order alternating (default 2)")
    bench.add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 2, 1
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1 but got {args.repeats}")
    return args


def main() -> None:
    args = parse_args()
    health = bench.apply_health_check(args.health_check_s)
    cfg = TrainConfig(epochs=args.epochs)
    data = DataRef(bench.DATASET).load()
    walls: dict[str, list[float]] = {name: [] for name in ARMS}
    trained: dict[str, list[float]] = {name: [] for name in ARMS}
    with bench.local_ray(num_cpus=2) as ray_times:
        for i in range(args.repeats):
            for name in arm_order(i):
                wall, loop = run_arm(ARMS[name], data, cfg, args.seed)
                walls[name].append(wall)
                trained[name].append(loop)
                print(f"  round {i + 1} {name:<10}: {wall:6.1f} s", flush=True)
    print(report(walls, trained, len(data.spec.modality_names), cfg, ray_times, health,
                 args.repeats))


def report(walls: dict[str, list[float]], trained: dict[str, list[float]], m: int,
           cfg: TrainConfig, ray_times: dict[str, float], health: str, repeats: int) -> str:
    seq, conc = bench.median(walls["sequential"]), bench.median(walls["concurrent"])
    gain = speedup(seq, conc)
    loop = bench.median(trained["sequential"])
    loop_conc = bench.median(trained["concurrent"])
    rows = [
        ("jobs", f"{m} unimodal jobs of one seed on {bench.DATASET}, {cfg.epochs} epochs, "
                 "1 CPU / 1 thread each"),
        ("cluster", f"local Ray, 2 CPUs (started in {bench.fmt_s(ray_times['startup_s'])}, "
                    "not counted)"),
        ("sequential (limit=1)", f"{bench.fmt_s(seq)}  (runs: "
                                 f"{', '.join(bench.fmt_s(w) for w in walls['sequential'])})"),
        ("concurrent (2 at once)", f"{bench.fmt_s(conc)}  (runs: "
                                   f"{', '.join(bench.fmt_s(w) for w in walls['concurrent'])})"),
        ("speed-up", f"{gain:.2f}x (ideal {m}x, efficiency {100 * gain / m:.0f}%)"),
        ("inside the training loops", f"{bench.fmt_s(loop)} of the sequential "
                                      f"{bench.fmt_s(seq)} (train, eval, reports); "
                                      f"the other {100 * (1 - loop / seq):.0f}% is job "
                                      "start-up and teardown"),
        ("training, alone / side by side", f"{bench.fmt_s(loop / m)} / "
                                           f"{bench.fmt_s(loop_conc / m)} per job: "
                                           f"{loop_conc / loop:.2f}x slower when the jobs share "
                                           "the 2 cores with each other and Ray"),
    ]
    notes = [health, f"median of {repeats} round(s), arm order alternating",
             "load average (1 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
             "Each arm starts its own trial processes (torch import) once; both arms share the",
             "2 cores with anything else running. On a GPU cluster with one GPU per job the",
             f"jobs do not share a device and the expected speed-up is close to M = {m}."]
    title = "benchmarks.concurrency: modality jobs at once vs one after the other"
    return bench.summary_block(title, rows, notes)


if __name__ == "__main__":
    main()
