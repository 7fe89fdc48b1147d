"""A corrupt results part and a diverged local run end in one line each, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.results import (
    UnreadablePartWarning,
    part_filename,
    read_results,
    write_results,
)
from tests.test_results_schema import _rows


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_part_is_left_out_with_a_warning(tmp_path: Path, damage: str) -> None:
    write_results(_rows("r1") + _rows("r2", seed=1), tmp_path)
    bad = tmp_path / part_filename("r2")
    data = bad.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"PAR1 not really",
                     "empty": b""}[damage])
    with pytest.warns(UnreadablePartWarning) as caught:
        df = read_results(tmp_path)
    assert set(df["run_id"]) == {"r1"} and len(df) == 5  # the other run's rows are all there
    msg = str(caught[0].message)
    assert msg.startswith(f"{bad}: not readable Parquet (") and "\n" not in msg
    assert "delete it and rerun the run" in msg
    with pytest.raises(ValueError, match=r"not readable Parquet .*delete it") as err:
        read_results(bad)  # one file asked for by name: an error
    assert "\n" not in str(err.value)
    write_results(_rows("r2", seed=1), tmp_path)  # rewriting the run repairs the part
    assert set(read_results(tmp_path)["run_id"]) == {"r1", "r2"}


SMALL_DATA = ["--dataset", "synthetic_unimodal", "--dataset-arg", "n=60", "--dataset-arg",
              "dim=4", "--dataset-arg", "num_classes=2", "--epochs", "1", "--threads", "1"]


def test_diverged_run_is_reported_failed_and_the_plan_goes_on(tmp_path, capsys, monkeypatch):
    import trainers.compare as compare
    from trainers.__main__ import main
    from trainers.loop import TrainingDiverged

    real = compare.train_or_reuse

    def flaky(data, cfg, store):  # fault injection: two runs diverge
        if (cfg.strategy, cfg.seed) == ("fusion_avg", 0) or (
                cfg.params.get("modality"), cfg.seed) == ("m2", 1):
            raise TrainingDiverged(f"{cfg.strategy}: loss became nan in phase 'main'")
        return real(data, cfg, store)

    monkeypatch.setattr(compare, "train_or_reuse", flaky)
    code = main([*SMALL_DATA, "--seeds", "0", "1", "--store", str(tmp_path), "--strategies",
                 "unimodal", "fusion_avg", "fusion_concat", "ume"])
    out, err = capsys.readouterr()
    assert code == 1 and "error: 3 of 10 run(s) failed" in err
    assert "[run] fusion_avg seed 0: FAILED, fusion_avg: loss became nan" in err
    assert "[run] ume seed 1: not run: it needs unimodal:m2, which failed" in err
    assert "[run] fusion_avg seed 1: trained" in err and "[run] ume seed 0: trained" in err
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()
            if ln.startswith(("unimodal:", "fusion_", "ume "))}
    assert rows["fusion_concat"][-2:] == ["2", "0"]  # seeds, failed
    assert rows["fusion_avg"][-2:] == ["1", "1"] and rows["ume"][-2:] == ["1", "1"]
    assert rows["unimodal:m2"][-2:] == ["1", "1"] and rows["unimodal:m1"][-2:] == ["2", "0"]

