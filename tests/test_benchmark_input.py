"""Pure helpers of benchmarks.input_pipeline (the benchmark itself is run by hand)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.input_pipeline import (
    at_least,
    per_identity,
    rate,
    sample_names,
    smooth_image,
    wait_fraction,
    waiting_time,
)
from trainers.data.reid_benchmarks import parse_rgbnt201


def test_sample_names_parse_as_rgbnt201_with_enough_identities() -> None:
    names = sample_names(4787)
    assert len(set(names)) == 4787
    parsed = [parse_rgbnt201(n) for n in names]
    assert len({pid for pid, _, _ in parsed}) == 171  # 28 per id, as the real train split
    assert {cam for _, cam, _ in parsed} == {0, 1, 2, 3}
    small = [parse_rgbnt201(n)[0] for n in sample_names(160)]
    assert per_identity(160) == 8 and len(set(small)) == 20
    assert parse_rgbnt201(sample_names(8, first_pid=900)[0])[0] == 900


def test_smooth_image_is_deterministic_and_sized() -> None:
    a, b = smooth_image(3), smooth_image(3)
    assert a.size == (128, 256) and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(smooth_image(4)))
    assert smooth_image(3, mode="L").mode == "L"


def test_rates_fractions_and_lower_bound_verdicts() -> None:
    assert rate(600, 2.0) == 300.0
    assert wait_fraction(1.0, 4.0) == 0.25 and wait_fraction(5.0, 4.0) == 1.0
    with pytest.raises(ValueError, match="total_s must be positive"):
        wait_fraction(1.0, 0.0)
    assert at_least(1.8, 1.8) == "met" and at_least(1.79, 1.8) == "MISSED"


def test_waiting_time_counts_the_iterator_and_the_epoch() -> None:
    import trainers.loop as loop

    def slow_batches(*a: object, **k: object):
        for _ in range(2):
            time.sleep(0.05)
            yield {}

    def epoch(*a: object, **k: object) -> dict:
        for _ in loop.batches():
            time.sleep(0.02)
        return {}

    real_b, real_e = loop.batches, loop.train_epoch
    loop.batches, loop.train_epoch = slow_batches, epoch
    try:
        with waiting_time() as acc:
            loop.train_epoch()
    finally:
        loop.batches, loop.train_epoch = real_b, real_e
    assert 0.09 <= acc["wait"] < acc["epoch"] and acc["epoch"] >= 0.13


def test_the_issues_baseline_makes_todays_floats(tmp_path) -> None:
    """The synchronous path the issue measured and today's reader give the same sample: the
    benchmark compares two ways of making one result."""
    import torch

    from benchmarks.input_pipeline import load, write_tree
    from benchmarks.issue_baseline import legacy_sample

    ds = load(write_tree(tmp_path / "t", 80), num_workers=0, augment="none")["train"]
    for i in (0, 7, len(ds) - 1):
        old, new = legacy_sample(ds, i), ds[i]
        assert old["y"] == new["y"] and old["camid"] == new["camid"]
        for m in ds.spec.modality_names:
            assert torch.allclose(old["x"][m], new["x"][m], atol=1e-6), m
