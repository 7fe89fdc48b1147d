"""The report's PNG plots (matplotlib, Agg backend: no display needed).

Each function takes plain numbers (already aggregated over seeds by ``orchestrator.report``) and
writes one PNG. Values are percentages; error bars are the sample std over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

MeanStd = tuple[float, float]  # mean and std over seeds, in percent
DPI = 120


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _width(n_bars: int) -> float:
    return max(6.0, 1.1 * n_bars + 2)


def _bar_labels(ax: Axes, bars: object, values: Sequence[float]) -> None:
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], padding=3, fontsize=8)


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for all panels, outside on the right (labels merged across panels)."""
    merged: dict[str, object] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        merged.update({lb: h for h, lb in zip(handles, labels, strict=True) if lb not in merged})
    fig.legend(list(merged.values()), list(merged), loc="outside right upper", fontsize=8)


def _percent_axis(ax: Axes, top: float) -> None:
    """0..top with room above for value labels; ticks stop at 100 (%)."""
    ax.set_ylim(0, top * 1.12 + 1)
    ax.set_yticks([t for t in range(0, 101, 10 if top < 60 else 20) if t <= top * 1.12 + 1])


def comparison_plot(values: Mapping[str, MeanStd], counts: Mapping[str, int], title: str,
                    ylabel: str, path: Path) -> Path:
    """One bar per strategy (mean over seeds) with std error bars and the seed count."""
    labels = list(values)
    means = [values[k][0] for k in labels]
    fig, ax = plt.subplots(figsize=(_width(len(labels)), 4.5), layout="constrained")
    colors = ["#9aa5b1" if k.startswith("unimodal") else "#2f6db5" for k in labels]
    bars = ax.bar(range(len(labels)), means, yerr=[values[k][1] for k in labels], capsize=5,
                  color=colors, edgecolor="black", linewidth=0.6)
    _bar_labels(ax, bars, means)
    ax.set_xticks(range(len(labels)), [f"{k}\n(n={counts[k]})" for k in labels], fontsize=9)
    ax.set_ylabel(ylabel)
    _percent_axis(ax, max(m + s for m, s in values.values()))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def probe_plot(probes: Mapping[str, Mapping[str, Mapping[str, MeanStd]]],
               labels: Sequence[str], modalities: Sequence[str], unimodal: Mapping[str, float],
               title: str, path: Path) -> Path:
    """Per split (train, test): grouped bars, strategy x modality probe accuracy; dashed lines
    mark each modality's unimodal run (test) in the test panel (UniCat Figure 2 view)."""
    splits = [s for s in ("train", "test") if s in probes]
    fig, axes = plt.subplots(1, len(splits), figsize=(_width(len(labels)) * len(splits) * 0.8,
                                                      4.8), squeeze=False, sharey=True,
                             layout="constrained")
    width = 0.8 / max(1, len(modalities))
    cmap = plt.get_cmap("tab10")
    for ax, split in zip(axes[0], splits, strict=True):
        for j, m in enumerate(modalities):
            xs = [i + (j - (len(modalities) - 1) / 2) * width for i in range(len(labels))]
            cells = [probes[split].get(k, {}).get(m, (float("nan"), 0.0)) for k in labels]
            ax.bar(xs, [c[0] for c in cells], width, yerr=[c[1] for c in cells], capsize=3,
                   color=cmap(j), edgecolor="black", linewidth=0.5, label=f"probe: {m}")
            if split == "test" and m in unimodal:
                ax.axhline(unimodal[m], color=cmap(j), linestyle="--", linewidth=1.2,
                           label=f"unimodal run: {m}")
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=9)
        ax.set_title(f"{split} split")
        _percent_axis(ax, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("linear probe accuracy (%)")
    _legend(fig, axes[0])
    fig.suptitle(title)
    return _save(fig, path)


def robustness_plot(curves: Mapping[str, Mapping[str, Sequence[tuple[float, MeanStd]]]],
                    title: str, path: Path) -> Path:
    """One panel per noised target; accuracy vs noise std, one line per strategy."""
    targets = list(curves)
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets) + 1.5, 4.2),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, target in zip(axes[0], targets, strict=True):
        n = len(curves[target])
        top = max((p[0] for pts in curves[target].values() for p in pts), default=1.0) or 1.0
        for i, (label, points) in enumerate(curves[target].items()):
            dx = (i - (n - 1) / 2) * 0.006 * top  # a small shift keeps error bars apart
            xs = [p[0] + dx for p in points]
            ax.errorbar(xs, [p[1][0] for p in points], yerr=[p[1][1] for p in points],
                        marker="o", capsize=3, label=label)
        ax.set_title(f"noise on: {target}")
        ax.set_xlabel("noise std (x the modality's train std)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    _legend(fig, axes[0])
    fig.suptitle(title)
    return _save(fig, path)


def curves_plot(curves: Mapping[str, Sequence[tuple[int, float]]], ylabel: str, title: str,
                path: Path) -> Path:
    """One line per trial: its validation score after each scored epoch."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2), layout="constrained")
    for label, points in curves.items():
        ax.plot([e for e, _ in points], [v for _, v in points], marker=".", linewidth=1,
                label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) <= 12:
        ax.legend(fontsize=7)
    return _save(fig, path)


def sweep_plot(values: Sequence[float], stopped: Sequence[bool], ylabel: str, title: str,
               path: Path) -> Path:
    """Validation metric of every trial in start order, and the best so far among finished
    trials; trials the scheduler stopped early (what ASHA saved) are drawn apart, at the last
    score they reported. Failed trials (NaN) are left out."""
    best, running = [], float("-inf")
    for v, cut in zip(values, stopped, strict=True):
        running = running if math.isnan(v) or cut else max(running, v)
        best.append(running if running > float("-inf") else float("nan"))
    xs = list(range(1, len(values) + 1))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(xs) + 4), 4.2), layout="constrained")
    done = [(x, v) for x, v, cut in zip(xs, values, stopped, strict=True) if not cut]
    cut = [(x, v) for x, v, c in zip(xs, values, stopped, strict=True) if c]
    ax.plot([x for x, _ in done], [v for _, v in done], "o", color="#2f6db5",
            label="finished trial")
    if cut:
        ax.plot([x for x, _ in cut], [v for _, v in cut], "x", color="#e07a1f", markersize=8,
                label=f"stopped early by the scheduler ({len(cut)})")
    ax.step(xs, best, where="post", color="#d1495b", label="best finished so far")
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    if len(xs) <= 30:
        ax.set_xticks(xs)
    return _save(fig, path)
