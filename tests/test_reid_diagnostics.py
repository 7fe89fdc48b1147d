"""Reid diagnostics: the laziness gap, MIR and DMC rows exist and compare like with like (the
raw encoder embedding of the method against the raw encoder embedding of the unimodal run)."""

from __future__ import annotations

import pytest
import torch

from orchestrator.diagnostics_rows import diagnose_store
from orchestrator.results import read_results
from tests.conftest import tiny_cfg
from trainers.checkpoint import load_checkpoint
from trainers.compare import local_runner, plan_and_run
from trainers.diagnostics import ProbeConfig, modality_competition, probe

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def diagnosed(tiny_reid, tmp_path_factory):
    root = tmp_path_factory.mktemp("reid_diag")
    store, res = root / "runs", root / "results"
    runs = plan_and_run(tiny_reid, tiny_cfg(), ["unimodal", "fusion_concat"], [0],
                        local_runner(store))
    diagnose_store(tiny_reid, store, res, ProbeConfig(), log=lambda _: None)
    return {label: rec for label, rec in runs}, read_results(res)


def value(df, run_id: str, metric: str, modality: str = "fused", split: str = "query") -> float:
    sel = df[(df["run_id"] == run_id) & (df["metric"] == metric) & (df["split"] == split)
             & (df["modality"] == modality)]
    assert len(sel) == 1, (run_id, metric, modality, split, sorted(set(df["metric"])))
    return float(sel["value"].iloc[0])


def raw_map(tiny_reid, rec, m: str) -> float:
    """mAP of the raw (pre-BNNeck) encoder embedding of ``m``, query against gallery."""
    model = load_checkpoint(rec.checkpoint, tiny_reid.spec)
    return probe(model, tiny_reid, m, splits=("query",)).scores["query"]


def test_reid_probe_gap_mir_and_dmc_rows_exist_with_checkable_values(tiny_reid, diagnosed):
    runs, df = diagnosed
    mods = tiny_reid.spec.modality_names
    concat = runs["fusion_concat"].name + "/diagnostics"
    uni = {m: raw_map(tiny_reid, runs[f"unimodal:{m}"], m) for m in mods}
    mm = {m: raw_map(tiny_reid, runs["fusion_concat"], m) for m in mods}
    for m in mods:
        assert value(df, concat, "probe_map", m) == pytest.approx(mm[m])
        assert value(df, concat, "probe_gap", m) == pytest.approx(uni[m] - mm[m])
        # a unimodal run compared with itself: no gap, like with like
        own = runs[f"unimodal:{m}"].name + "/diagnostics"
        assert value(df, own, "probe_gap", m) == pytest.approx(0.0, abs=1e-9)
    comp = modality_competition(uni, mm)
    assert value(df, concat, "mir") == pytest.approx(comp.mir_mm)
    assert value(df, concat, "dmc") == pytest.approx(comp.dmc)
    mir_uni = df[(df["strategy"] == "unimodal") & (df["metric"] == "mir")]
    assert len(mir_uni) == 1 and float(mir_uni["value"].iloc[0]) == pytest.approx(comp.mir_uni)
    # the training rows keep reid test metrics under "test" (what StoredRun.score reads)
    rec = runs[f"unimodal:{mods[0]}"]
    assert value(df, rec.name, "map", mods[0], split="test") == rec.metrics["test"][mods[0]]["map"]

