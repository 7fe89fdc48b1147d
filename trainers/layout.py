"""The storage layout: one root for every command, with fixed children.

Every command (``python -m trainers``, the sweeps, ``python -m orchestrator``) takes the same root:
``--storage``, else ``$FUSION_STORAGE``, else ``./fusion-results``. Under it:

- ``runs/``: the run store (one folder per finished run, :mod:`trainers.runs`);
- ``results/``: Parquet parts only (:mod:`orchestrator.results`), so
  ``pd.read_parquet("<root>/results")`` always works;
- ``reports/``: ``report.md`` and its plots;
- ``_ray/``: Ray's own files (Train runs and Tune experiments, ``_ray/train``, ``_ray/tune``);
- ``smoke/``: a whole second layout for ``--smoke-test`` runs, so tiny smoke runs never mix
  with full-budget ones in the run store, the results or the report.

The root may be a local folder or a URI (``s3://bucket/prefix``): all access goes through
:class:`trainers.storage.Storage`. Older layouts are never silently ignored:
:func:`old_layout_notes` names each one found and what to do, in one line each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainers.storage import Storage

STORAGE_ENV = "FUSION_STORAGE"
DEFAULT_ROOT = "./fusion-results"
RUNS, RESULTS, REPORTS, RAY, SMOKE = "runs", "results", "reports", "_ray", "smoke"
# Ray unpacks a job's --working-dir into <session>/runtime_resources/working_dir_files/_ray_pkg_<h>
# (ray/_private/ray_constants.py DEFAULT_RUNTIME_ENV_DIR_NAME, runtime_env/packaging.py).
RUNTIME_ENV_MARKERS = ("runtime_resources", "_ray_pkg_")


def default_root() -> str:
    """``$FUSION_STORAGE`` when set, else ``./fusion-results``."""
    return os.environ.get(STORAGE_ENV) or DEFAULT_ROOT


@dataclass(frozen=True)
class Layout:
    """The fixed folders under one storage root."""

    root: Storage

    @classmethod
    def open(cls, location: str | Path | Storage | None = None) -> Layout:
        return cls(Storage.open(default_root() if location is None else location))

    @property
    def runs(self) -> Storage:
        return self.root.child(RUNS)

    @property
    def results(self) -> Storage:
        return self.root.child(RESULTS)

    @property
    def reports(self) -> Storage:
        return self.root.child(REPORTS)

    @property
    def ray(self) -> Storage:
        return self.root.child(RAY)

    def smoke(self) -> Layout:
        """The layout of ``--smoke-test`` runs: ``<root>/smoke``, a layout of its own."""
        return Layout(self.root.child(SMOKE))


def ray_files(run_store: Storage, kind: str) -> Storage:
    """Where Ray keeps its files (``kind``: ``train`` or ``tune``) for jobs of ``run_store``:
    ``<root>/_ray/<kind>`` for the run store of a layout (``<root>/runs``); a store outside a
    layout (a bare folder) keeps them inside itself, ``<store>/_ray/<kind>``."""
    parent, _, last = run_store.location.rstrip("/").rpartition("/")
    if last == RUNS and parent:
        return Storage(f"{parent}/{RAY}/{kind}", run_store.fs,
                       f"{run_store.root.rstrip('/').rpartition('/')[0]}/{RAY}/{kind}")
    return run_store.child(RAY, kind)


RECORD_FILE = "result.json"  # trainers.checkpoint.RECORD_FILE (that module imports torch)


def _has_runs(store: Storage) -> bool:
    """Whether ``store`` holds a finished run's folder (its record file) at its top level."""
    return any(f.type.name == "Directory" and not f.base_name.startswith(("_", "."))
               and store.is_file(f.base_name, RECORD_FILE) for f in store.list())


def _has_parquet(store: Storage) -> bool:
    return any(f.base_name.endswith(".parquet") for f in store.list())


def old_layout_notes(layout: Layout, cwd: Path | None = None) -> list[str]:
    """One line per older layout found, naming where it is and what to do.

    Looked for: finished runs directly in the root (the sweeps' old run store), Parquet parts in
    ``results/results`` and a report inside the Parquet folder (``results/report``); with ``cwd``
    (the root is the default one), also ``./runs`` of the old ``python -m trainers`` and an old
    sweep root ``./results`` holding runs."""
    root, notes = layout.root, []
    if _has_runs(root):
        notes.append(f"old layout: finished runs directly in {root} are not reused; move those "
                     f"run folders into {layout.runs.location}/")
    if _has_parquet(layout.results.child(RESULTS)):
        notes.append(f"old layout: Parquet parts in {layout.results.uri(RESULTS)} are not read; "
                     f"move them into {layout.results.location}/")
    if layout.results.is_dir("report"):
        old = layout.results.uri("report")
        notes.append(f"old layout: a report inside the Parquet folder ({old}) breaks "
                     f"pd.read_parquet; move it to {layout.reports.location}/ or delete it")
    if cwd is not None:
        notes += _old_cwd_notes(layout, cwd)
    return notes


def _old_cwd_notes(layout: Layout, cwd: Path) -> list[str]:
    notes = []
    old_runs, old_root = Storage.open(cwd / RUNS), Storage.open(cwd / RESULTS)
    if old_runs.location != layout.runs.location and _has_runs(old_runs):
        notes.append(f"old layout: runs of 'python -m trainers --store runs' in {old_runs} are "
                     f"not reused; move them into {layout.runs.location}/ (or pass --storage)")
    if old_root.location != layout.root.location and _has_runs(old_root):
        notes.append(f"old layout: sweep runs in {old_root} are not reused; move them into "
                     f"{layout.runs.location}/ and {old_root}/results/* into "
                     f"{layout.results.location}/ (or pass --storage)")
    return notes


def runtime_env_warning(layout: Layout) -> str | None:
    """A one-line warning when a local root lies inside Ray's runtime-env cache (a job started
    with ``ray job submit --working-dir``): Ray deletes that folder, and the results with it."""
    if not layout.root.is_local:
        return None
    path = Path(layout.root.root)
    if any(part == RUNTIME_ENV_MARKERS[0] or part.startswith(RUNTIME_ENV_MARKERS[1])
           for part in path.parts):
        return (f"warning: storage {path} is inside Ray's runtime-env cache (a ray job submit "
                "--working-dir job); Ray deletes it later: pass --storage with an absolute path "
                "outside it or a URI such as s3://bucket/prefix")
    return None


def layout_warnings(layout: Layout, is_default: bool) -> list[str]:
    """Every one-line warning about ``layout``: older layouts (those beside the current folder
    too when the root is the default one) and a root inside Ray's runtime-env cache."""
    notes = [f"warning: {n}" for n in old_layout_notes(layout, Path.cwd() if is_default else None)]
    inside_cache = runtime_env_warning(layout)
    return notes + ([inside_cache] if inside_cache else [])
