"""``python -m orchestrator report [ROOT]``: a self-contained folder (``ROOT/reports``:
``report.md`` + PNGs) that is only a view of the Parquet results in ``ROOT/results``
(``orchestrator.results``).

Sections, each present when the results hold its rows: the comparison table (test accuracy, or
mAP for reid, of the fused output and of each modality; mean ± sample std over seeds), the
laziness table (linear probes on train and test next to the unimodal runs, and the gap), MIR and
DMC (ReconBoost Table 11 shape), robustness (noise per target, missing modality), the selection
trick, and per sweep the trial history, the best configuration and the parameter importance.
Diagnostics metric names are listed in ``orchestrator.diagnostics_rows``.

Which runs are shown: unimodal runs are labelled ``unimodal:<modality>``; when a strategy has
several runs with the same seed (a sweep), the one with the best validation score is kept
(docs/protocol.md) and the report says so. Results of several datasets are refused unless
``dataset`` picks one.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator import report_plots as plots
from orchestrator.results import FUSED, read_results, summary_table
from trainers.layout import RUNS, Layout, layout_warnings
from trainers.storage import Storage

ORDER = ("fusion_concat", "fusion_avg", "ume", "unicat", "umt", "reconboost")
SCALE_FREE = frozenset({"mir", "dmc"})  # ratios: shown as they are, not in percent
EVAL_SPLITS = {"accuracy": ("test",), "map": ("query", "test", "gallery")}


class ReportError(ValueError):
    """The results cannot make a report; the message says why and what to do."""


@dataclass
class ReportData:
    rows: pd.DataFrame  # selected rows, with ``label`` and ``base_run`` columns
    dataset: str
    metric: str  # accuracy (classification) or map (reid)
    split: str  # the split the comparison is on (test, or query for reid)
    trials: pd.DataFrame  # training rows of sweep trials (all of them, before selection)
    notes: list[str] = field(default_factory=list)
    runs: Storage | None = None  # the run store beside the results (per-epoch histories)

    @property
    def labels(self) -> list[str]:
        return order_labels(self.rows["label"].unique())

    @property
    def modalities(self) -> list[str]:
        mods = self.rows.loc[self.rows["metric"] == self.metric, "modality"].unique()
        return sorted(m for m in mods if m != FUSED)


def order_labels(labels: Sequence[str]) -> list[str]:
    def key(label: str) -> tuple[int, int, str]:
        if label.startswith("unimodal"):
            return (0, 0, label)
        return (1, ORDER.index(label) if label in ORDER else len(ORDER), label)

    return sorted(set(labels), key=key)


# --- loading and selecting ---------------------------------------------------------------------


def run_label(strategy: str, config_json: str) -> str:
    if strategy == "unimodal":
        modality = json.loads(config_json).get("params", {}).get("modality")
        if modality:
            return f"unimodal:{modality}"
    return strategy


def pick_dataset(df: pd.DataFrame, dataset: str | None, source: str) -> pd.DataFrame:
    found = sorted(df["dataset"].unique())
    if dataset is not None:
        if dataset not in found:
            raise ReportError(f"no rows of dataset {dataset!r} in {source}; it holds {found}")
        return df[df["dataset"] == dataset]
    if len(found) > 1:
        raise ReportError(f"{source} mixes runs of datasets {found}; a report compares runs of "
                          "one dataset: pick one with --dataset NAME")
    return df


def primary_metric(df: pd.DataFrame, source: str) -> tuple[str, str]:
    for metric, splits in EVAL_SPLITS.items():
        for split in splits:
            if ((df["metric"] == metric) & (df["split"] == split)).any():
                return metric, split
    raise ReportError(f"{source} holds no run results (no test accuracy, no mAP): "
                      f"metrics present {sorted(df['metric'].unique())}; write the runs' rows "
                      "first (python -m orchestrator diagnose, or the Ray jobs)")


def select_runs(train: pd.DataFrame, metric: str) -> tuple[set[str], list[str]]:
    """One run per (label, seed): the best on validation when there are several."""
    val = train[(train["metric"] == metric) & (train["split"] == "val")
                & (train["modality"] == FUSED)].set_index("run_id")["value"]
    keep, notes = set(), []
    runs = train.drop_duplicates("run_id")
    for (label, seed), group in runs.groupby(["label", "seed"]):
        ids = sorted(group["run_id"])
        scores = [val.get(r, float("nan")) for r in ids]
        best = max(range(len(ids)), key=lambda i: -math.inf if math.isnan(scores[i])
                   else scores[i])
        keep.add(ids[best])
        if len(ids) > 1:
            notes.append(f"{label}, seed {seed}: {len(ids)} runs; kept {ids[best]} (best val "
                         f"{metric})")
    return keep, notes


def load_report_data(results: str | Path, dataset: str | None = None) -> ReportData:
    source = f"results {str(results)!r}"
    df = read_results(results)
    if df.empty:
        raise ReportError(f"{source} holds no runs; write some first (python -m orchestrator "
                          "diagnose --store RUNS --results DIR, or the Ray jobs)")
    df = pick_dataset(df, dataset, source)
    labels = {k: run_label(*k) for k in set(zip(df["strategy"], df["config_json"], strict=True))}
    df = df.assign(label=[labels[k] for k in zip(df["strategy"], df["config_json"], strict=True)],
                   base_run=df["run_id"].str.split("/", n=1).str[0])
    metric, split = primary_metric(df, source)
    train = df[~df["run_id"].str.contains("/", regex=False)]
    keep, notes = select_runs(train, metric)
    selected = df["base_run"].isin(keep) | ~df["base_run"].isin(set(train["run_id"]))
    trials = train[train["trial_id"] != ""]
    return ReportData(df[selected], str(df["dataset"].iloc[0]), metric, split, trials, notes,
                      sibling_runs(results))


def sibling_runs(results: str | Path) -> Storage | None:
    """The run store of the storage root that ``results`` belongs to (``<root>/runs``)."""
    parent = Storage.open(results).location.rstrip("/").rpartition("/")[0]
    runs = Storage.open(f"{parent}/{RUNS}") if parent else None
    return runs if runs is not None and runs.is_dir() else None


# --- aggregation --------------------------------------------------------------------------------


def stats(data: ReportData, metric: str, split: str, modality: str) -> dict[str, dict]:
    """label -> summary row (mean, std, count, n_failed) over seeds."""
    df = data.rows
    sel = df[(df["metric"] == metric) & (df["split"] == split) & (df["modality"] == modality)]
    if sel.empty:
        return {}
    table = summary_table(sel.assign(strategy=sel["label"]), metric, split, modality)
    return {r["strategy"]: r for r in table.to_dict("records")}


def cell(row: Mapping[str, Any] | None, metric: str) -> str:
    if row is None:
        return ""
    if int(row["count"]) == 0:
        return "failed"
    scale = 1.0 if metric in SCALE_FREE else 100.0
    text = f"{row['mean'] * scale:.2f}"
    if int(row["count"]) > 1:
        text += f" ± {row['std'] * scale:.2f}"
    return text + (f" ({int(row['n_failed'])} failed)" if int(row["n_failed"]) else "")


def mean_std(row: Mapping[str, Any]) -> tuple[float, float]:
    std = row["std"] if int(row["count"]) > 1 else 0.0
    return 100 * float(row["mean"]), 100 * float(std)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --- sections -----------------------------------------------------------------------------------


def comparison_section(data: ReportData, out: Path) -> str:
    cols = [FUSED, *data.modalities]
    by_col = {c: stats(data, data.metric, data.split, c) for c in cols}
    labels = [k for k in data.labels if k in by_col[FUSED]]
    counts = {k: int(by_col[FUSED][k]["count"]) for k in labels}
    rows = [[k, *(cell(by_col[c].get(k), data.metric) for c in cols), str(counts[k])]
            for k in labels]
    title = f"{data.metric} on {data.split} (%), {data.dataset}"
    plots.comparison_plot({k: mean_std(by_col[FUSED][k]) for k in labels}, counts,
                          f"{title}: mean ± std over seeds", f"{data.split} {data.metric} (%)",
                          out / "comparison.png")
    return (f"## Comparison\n\n{title}: mean ± sample std over seeds (n = seeds). Per-modality "
            "columns of a fused model are its head with the other embeddings set to zero; the "
            "linear probes below are the proper per-modality measure.\n\n"
            + md_table(["strategy", *cols, "n"], rows) + "\n\n![comparison](comparison.png)\n")


def laziness_section(data: ReportData, out: Path) -> str:
    probe = f"probe_{data.metric}"
    mods = data.modalities
    by = {(s, m): stats(data, probe, s, m) for s in ("train", data.split) for m in mods}
    uni = {m: stats(data, data.metric, data.split, m).get(f"unimodal:{m}") for m in mods}
    gap = {m: stats(data, "probe_gap", data.split, m) for m in mods}
    rows, view = [], {"train": {}, "test": {}}
    for k in data.labels:
        for m in mods:
            tr, te = by[("train", m)].get(k), by[(data.split, m)].get(k)
            if te is None:
                continue
            rows.append([k, m, cell(tr, probe), cell(te, probe), cell(uni[m], data.metric),
                         cell(gap[m].get(k), "probe_gap")])
            view["test"].setdefault(k, {})[m] = mean_std(te)
            if tr is not None:
                view["train"].setdefault(k, {})[m] = mean_std(tr)
    if not rows:
        return ""
    plots.probe_plot({s: v for s, v in view.items() if v}, list(view["test"]), mods,
                     {m: mean_std(r)[0] for m, r in uni.items() if r is not None},
                     f"Linear probes of each frozen encoder, {data.dataset} (mean ± std)",
                     out / "probes.png")
    return ("## Modality laziness (linear probes)\n\nA fresh linear head on each frozen encoder "
            f"({probe}, %); the unimodal run of the same modality; gap = unimodal - probe "
            "(percentage points, per seed, then averaged). A large gap on both train and test "
            "is laziness; a small train gap with a large test gap is overfitting.\n\n"
            + md_table(["strategy", "modality", "probe train", f"probe {data.split}",
                        f"unimodal run {data.split}", "gap"], rows)
            + "\n\n![probes](probes.png)\n")


def mir_section(data: ReportData) -> str:
    mods, probe = data.modalities, f"probe_{data.metric}"
    mir, dmc = stats(data, "mir", data.split, FUSED), stats(data, "dmc", data.split, FUSED)
    if not mir:
        return ""
    scores = {m: stats(data, data.metric, data.split, m) for m in mods}
    probes = {m: stats(data, probe, data.split, m) for m in mods}
    rows = [["unimodal runs", *(cell(scores[m].get(f"unimodal:{m}"), data.metric) for m in mods),
             cell(mir.get("unimodal"), "mir"), "-"]]
    rows += [[k, *(cell(probes[m].get(k), probe) for m in mods), cell(mir[k], "mir"),
              cell(dmc.get(k), "dmc")] for k in data.labels if k in mir and k != "unimodal"]
    return ("## Modality imbalance (MIR) and competition (DMC)\n\nMIR = score of the modality "
            "strongest in the unimodal runs / score of the weaker (geometric mean over pairs "
            "for more than 2 modalities); methods use their linear probes; DMC = MIR_method / "
            "MIR_unimodal, computed per seed then averaged (> 1: joint training widened the "
            "gap).\n\n" + md_table(["method", *(f"{m} (%)" for m in mods), "MIR", "DMC"], rows)
            + "\n")


def noise_levels(data: ReportData) -> list[tuple[float, str]]:
    names = data.rows.loc[data.rows["metric"].str.startswith("noise_accuracy@"), "metric"]
    return sorted((float(n.split("@", 1)[1]), n) for n in names.unique())


def robustness_section(data: ReportData, out: Path) -> str:
    levels = noise_levels(data)
    if not levels:
        return ""
    noisy = data.rows[data.rows["metric"] == levels[0][1]]
    targets = sorted(noisy["modality"].unique(), key=lambda t: (t == "all", t))
    parts, curves = ["## Robustness\n\nFused test accuracy (%) with Gaussian noise of std = "
                     "level x the modality's train std on one modality or all, and with one "
                     "modality missing (zeros) at test time.\n"], {}
    for target in targets:
        cells = {name: stats(data, name, "test", target) for _, name in levels}
        labels = [k for k in data.labels if any(k in c for c in cells.values())]
        parts.append(f"### Noise on {target}\n\n" + md_table(
            ["strategy", *(f"std {lv:g}" for lv, _ in levels)],
            [[k, *(cell(cells[n].get(k), n) for _, n in levels)] for k in labels]) + "\n")
        curves[target] = {k: [(lv, mean_std(cells[n][k])) for lv, n in levels if k in cells[n]]
                          for k in labels}
    missing = {m: stats(data, "missing_accuracy", "test", m) for m in data.modalities}
    labels = [k for k in data.labels if any(k in c for c in missing.values())]
    if labels:
        parts.append("### Missing modality\n\n" + md_table(
            ["strategy", *(f"without {m}" for m in missing)],
            [[k, *(cell(missing[m].get(k), "missing_accuracy") for m in missing)]
             for k in labels]) + "\n")
    plots.robustness_plot(curves, f"Accuracy under test-time noise, {data.dataset}",
                          out / "robustness.png")
    return "\n".join(parts) + "\n![robustness](robustness.png)\n"


def selection_section(data: ReportData) -> str:
    lin = stats(data, "selection_linear_accuracy", "val", FUSED).get("selection_trick")
    ume = stats(data, "selection_ume_accuracy", "val", FUSED).get("selection_trick")
    umt = stats(data, "selection_umt", "val", FUSED).get("selection_trick")
    if lin is None or ume is None or umt is None:
        return ""
    return ("## Selection trick (UME/UMT paper, section 3.3)\n\nA linear classifier on the "
            "concatenated frozen unimodal embeddings vs UME, on validation: classifier better "
            "=> cross-modal interactions help => UMT, else UME.\n\n"
            + md_table(["linear classifier val (%)", "UME val (%)", "recommendation"],
                       [[cell(lin, "accuracy"), cell(ume, "accuracy"),
                         selection_verdict(lin, ume, umt)]]) + "\n")


def selection_verdict(lin: Mapping[str, Any], ume: Mapping[str, Any],
                      umt: Mapping[str, Any]) -> str:
    """The pick by the mean over seeds, the per-seed votes, and a warning when the difference
    is within the spread over seeds (then the choice hardly matters on this data)."""
    votes, n = round(umt["mean"] * umt["count"]), int(umt["count"])
    diff = 100 * (lin["mean"] - ume["mean"])
    pick = "UMT" if diff > 0 else "UME"
    text = f"{pick} by the mean over seeds (UMT won in {votes} of {n} seeds)"
    spread = 100 * max(_std(lin), _std(ume))
    if abs(diff) < spread:
        text += (f"; the difference ({diff:+.2f} pt) is within the spread over seeds: "
                 "too close to call")
    return text


def _std(row: Mapping[str, Any]) -> float:
    std = row.get("std", 0.0)
    return 0.0 if std is None or math.isnan(std) else float(std)


def default_report_location(results: str | Path) -> str:
    """``reports/`` beside the results folder (never inside it: that folder holds Parquet parts
    only, so ``pd.read_parquet`` keeps reading it)."""
    location = Storage.open(results).location
    return location.rsplit("/", 1)[0] + "/reports"


def report_input(location: str | Path | None, out: str | Path | None = None
                 ) -> tuple[str, str]:
    """(results folder, report folder) of ``report [ROOT]``: a storage root gives ``ROOT/results``
    and ``ROOT/reports`` (the default root when None); a folder of Parquet parts is read as it is,
    its report written to ``reports/`` beside it. Older layouts are named on stderr."""
    layout = Layout.open(location)
    for line in layout_warnings(layout, is_default=location is None):
        print(line, file=sys.stderr, flush=True)
    if layout.results.is_dir() or not layout.root.is_dir():
        results = layout.results
        if not results.is_dir():
            raise ReportError(f"no results in {results} (nor a storage root at {layout.root}); "
                              "run a sweep first, or pass the --storage ROOT it used")
        return results.location, str(out or layout.reports.location)
    return layout.root.location, str(out or default_report_location(layout.root.location))


def build_report(results: str | Path, out: str | Path | None = None,
                 dataset: str | None = None) -> str:
    """Write ``report.md`` and the PNGs into ``out`` (a folder or URI; default ``reports/``
    beside ``results``); returns where. Remote reports are drawn locally, then uploaded."""
    target = Storage.open(out if out is not None else default_report_location(results))
    if target.is_local:
        render_report(results, Path(target.root), dataset)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            render_report(results, Path(tmp), dataset)
            target.upload_dir(Path(tmp))
    return target.location


def render_report(results: str | Path, folder: Path, dataset: str | None = None) -> None:
    from orchestrator.report_sweeps import sweep_sections  # it builds on this module

    data = load_report_data(results, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    runs = data.rows.loc[~data.rows["run_id"].str.contains("/", regex=False), "run_id"]
    head = (f"# Report: {data.dataset}\n\nFrom `{results}`: {runs.nunique()} runs, seeds "
            f"{sorted(int(s) for s in data.rows['seed'].unique())}. Models were selected on "
            "validation and tested once.\n")
    if data.notes:
        head += "\nSelected runs:\n\n" + "\n".join(f"- {n}" for n in data.notes) + "\n"
    sections = [head, comparison_section(data, folder), laziness_section(data, folder),
                mir_section(data), robustness_section(data, folder), selection_section(data),
                sweep_sections(data, folder)]
    (folder / "report.md").write_text("\n".join(s for s in sections if s))
