"""Train every modality's backbone as its own Ray Train job, all at once, and build ensembles.

One unimodal run per (modality, seed), trained concurrently on the cluster (a GPU each when
there are GPUs) or reused from the run store, then the ensembles per seed from those runs,
with no joint training: UME (mean of the unimodal softmax probabilities) for classification,
UniCat (concatenated, L2-normalised embeddings) for re-identification. Every run is scored on
test (reid: query vs gallery) once.
Results: Parquet under <storage>/results (runs in <storage>/runs), and a mean ± std table over
the seeds.

Examples:
  python sweeps/unimodal_ensembles.py                 # local Ray, embedded data, seeds 0 1 2
  python sweeps/unimodal_ensembles.py --smoke-test    # about a minute
  python sweeps/unimodal_ensembles.py --dataset reid_synth   # UniCat on the synthetic reid set
  python sweeps/unimodal_ensembles.py --address auto --storage /mnt/shared/fusion-results
"""

from __future__ import annotations

from orchestrator.aggregate import (
    ensemble_runs,
    runs_rows,
    strategy_bases,
    unimodal_rows,
    write_and_summarise,
)
from sweeps.common import Budget, Script, Setup, train_unimodal
from sweeps.common import main as run_script

SCRIPT = Script(
    doc=__doc__,
    strategy="",
    full=Budget(epochs=10, num_samples=0, seeds=(0, 1, 2)),
    smoke=Budget(epochs=2, num_samples=0, seeds=(0,), model={"embed_dim": 16, "hidden_dim": 32}),
)


ENSEMBLE = {"classification": "ume", "reid": "unicat"}


def body(s: Setup) -> str:
    unimodal = train_unimodal(s)
    bases = strategy_bases(ENSEMBLE[s.data.spec.task], s.base, unimodal)
    rows = {**unimodal_rows(unimodal, s.base, s.data),
            **runs_rows(ensemble_runs(s.data, bases, s.storage), bases, s.data.spec)}
    return write_and_summarise(rows, s.layout.results)


def main(argv: list[str] | None = None) -> int:
    return run_script(SCRIPT, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
