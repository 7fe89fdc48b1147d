"""GPU check: every registered strategy trains one epoch on CUDA, then the Ray path with a GPU.

``python -m benchmarks.gpu_check`` prints one line per check (``ok``/``FAIL``, time, what was
checked) and exits 1 on any failure. Where torch sees no CUDA device it prints "no CUDA device"
and exits 0, so it can run anywhere; only a machine with a GPU gives it meaning. It is sized to
finish in well under 5 minutes on one GPU:

1. each strategy for each task it supports (AV-Digits for classification, the small synthetic
   reid set for reid), one epoch with ``device="cuda"``, checking that the parameters are on
   CUDA and the test metrics are finite;
2. ``sweeps/unimodal_ensembles.py --smoke-test --gpus-per-job 1`` on a local Ray that has the
   GPU (a subprocess), which must exit 0 with the UME table.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _line(ok: bool, seconds: float, what: str) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {seconds:6.1f} s  {what}", flush=True)
    return ok


def strategy_checks() -> list[bool]:
    from tempfile import TemporaryDirectory

    from trainers.compare import dependent_config
    from trainers.config import TrainConfig
    from trainers.data import create_dataset
    from trainers.runs import train_or_reuse
    from trainers.strategies import list_strategies, strategy_class

    data = {"classification": create_dataset("avdigits"),
            "reid": create_dataset("reid_synth", image_size=(16, 8))}
    results = []
    with TemporaryDirectory() as store:
        for task, bundle in data.items():
            base = TrainConfig(epochs=1, device="cuda")
            uni = {m: train_or_reuse(bundle, base.replace(strategy="unimodal",
                                                          params={"modality": m}), store)
                   for m in bundle.spec.modality_names}
            refs = {m: r.name for m, r in uni.items()}
            for name in list_strategies():
                if task not in strategy_class(name).tasks:
                    continue
                t0 = time.perf_counter()
                try:
                    params = {"modality": bundle.spec.modality_names[0]} \
                        if name == "unimodal" else {}
                    cfg = dependent_config(name, base, refs, params)
                    record = train_or_reuse(bundle, cfg, store)
                    scores = [v for by_key in record.metrics["test"].values()
                              for v in by_key.values()]
                    ok = bool(scores) and all(math.isfinite(v) for v in scores)
                    detail = f"{task}: {name} trained 1 epoch on cuda"
                except Exception as err:  # noqa: BLE001 - every failure is a reported line
                    ok, detail = False, f"{task}: {name}: {type(err).__name__}: {err}"
                results.append(_line(ok, time.perf_counter() - t0, detail.splitlines()[0]))
    return results


def ray_check() -> bool:
    t0 = time.perf_counter()
    with __import__("tempfile").TemporaryDirectory() as store:
        proc = subprocess.run([sys.executable, "sweeps/unimodal_ensembles.py", "--smoke-test",
                               "--gpus-per-job", "1", "--storage", store], cwd=ROOT,
                              capture_output=True, text=True, timeout=240)
    ok = proc.returncode == 0 and "ume" in proc.stdout
    tail = "" if ok else " | " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return _line(ok, time.perf_counter() - t0,
                 f"ray: unimodal_ensembles --smoke-test --gpus-per-job 1 exit "
                 f"{proc.returncode}{tail}")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check (run this on a machine with an NVIDIA GPU)")
        return 0
    print(f"CUDA device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    results = strategy_checks() + [ray_check()]
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
