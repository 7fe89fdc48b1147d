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
