"""The report's sweep sections: per sweep, its trials in start order (those the scheduler
stopped marked), the best configuration, the parameter importance and the finished trials'
training curves (validation score per epoch, from the run store's histories)."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator import report_plots as plots
from orchestrator.report import ReportData, md_table, order_labels
from orchestrator.sweep_summary import SweepSummary, summarise_sweep
from trainers.runs import load_record


def trial_curves(data: ReportData, s: SweepSummary) -> dict[str, list[tuple[int, float]]]:
    """Per finished trial, its validation score per epoch from the run store's history."""
    out: dict[str, list[tuple[int, float]]] = {}
    for t in s.trials:
        record = load_record(data.runs, t.run_id) if data.runs is not None else None
        if record is not None:
            points = [(int(h["epoch"]), 100 * float(h["score"])) for h in record.history()
                      if h.get("score") is not None]
            if points:
                out[t.trial_id] = points
    return out


def sweep_sections(data: ReportData, out: Path) -> str:
    parts = []
    for label in order_labels(data.trials["label"].unique()):
        rows = data.trials[data.trials["label"] == label]
        if rows["run_id"].nunique() < 2:
            continue
        summary = summarise_sweep(label, rows, data.metric)
        parts.append(_sweep_text(summary, data, out))
    return "\n".join(parts)


def _sweep_text(s: SweepSummary, data: ReportData, out: Path) -> str:
    name = f"sweep_{s.label.replace(':', '_')}.png"
    plots.sweep_plot([100 * t.score for t in s.trials], [t.status == "stopped" for t in s.trials],
                     f"val {data.metric} (%)", f"Sweep of {s.label}: val {data.metric} per trial",
                     out / name)
    curves = trial_curves(data, s)
    if curves:
        plots.curves_plot(curves, f"val {data.metric} (%)",
                          f"Sweep of {s.label}: validation score per epoch", out / f"curves_{name}")
    best = s.best
    params = md_table(["parameter", "best value"],
                      [[k, f"`{json.dumps(v)}`"] for k, v in sorted(best.params.items())])
    stopped = sum(t.status == "stopped" for t in s.trials)
    text = (f"## Sweep: {s.label}\n\n{len(s.trials)} trials ({stopped} stopped early by the "
            f"scheduler); best trial {best.trial_id} (run "
            f"{best.run_id}), val {data.metric} {100 * best.score:.2f}%. The sweep scripts "
            "train it for every seed only when it beats the untuned configuration (their first "
            "trial) by at least --min-gain validation points (default 1.5); otherwise their "
            f"final runs are the untuned configuration's.\n\n{params}\n")
    if s.importance:
        text += "\nParameter importance (Optuna fANOVA, sums to 1):\n\n" + md_table(
            ["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in s.importance.items()])
    elif s.note:
        text += f"\n{s.note}.\n"
    text += f"\n\n![sweep history]({name})\n"
    if curves:
        text += (f"\nTraining curves of the {len(curves)} finished trial(s) (from the run "
                 f"store's histories):\n\n![training curves](curves_{name})\n")
    return text
