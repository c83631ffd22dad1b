"""The shift report's arithmetic: the normalised area, gains paired by seed, the trend statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distill.shiftstudy.board import build_report, normalised_area, report_markdown


def test_area_of_a_line_is_its_mean_over_the_range() -> None:
    # y = 2x + 1 on [10, 30]: the average over the range is y at its middle, 41
    assert normalised_area([10.0, 15.0, 30.0], [21.0, 31.0, 61.0]) == pytest.approx(41.0)


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=8), st.floats(-3, 3))
def test_area_of_a_constant_is_the_constant(offsets: list[float], value: float) -> None:
    fids = np.cumsum(np.abs(offsets) + 0.1).tolist()
    assert normalised_area(fids, [value] * len(fids)) == pytest.approx(value)


def _results(accuracy: dict[str, list[float]], teacher: list[float]) -> dict[int, dict]:
    seeds = range(len(teacher))
    return {
        seed: {
            "teacher": teacher[seed],
            "accuracy": {name: values[seed] for name, values in accuracy.items()},
            "agreement": {name: 0.5 for name in accuracy},
        }
        for seed in seeds
    }


def test_gains_are_paired_by_seed_and_their_trend_follows_the_fid() -> None:
    splits = [
        {"index": i, "fid": fid, "train_samples": 10, "test_samples": 5}
        for i, fid in enumerate([1.0, 2.0, 4.0])
    ]
    per_split = [
        # seed 0 is a hard seed for both methods: paired, the gain is exactly 0.02 with no spread
        _results({"scratch": [0.50, 0.70], "kd": [0.52, 0.72]}, [0.8, 0.9]),
        _results({"scratch": [0.40, 0.60], "kd": [0.45, 0.65]}, [0.7, 0.8]),
        _results({"scratch": [0.30, 0.50], "kd": [0.40, 0.60]}, [0.6, 0.7]),
    ]
    report = build_report("toy", splits, per_split, ["scratch", "kd"], "scratch")
    first = report["rows"][0]
    assert first["gain"]["kd"] == pytest.approx((0.02, 0.0))
    assert first["accuracy"]["scratch"][0] == pytest.approx(0.60)
    assert first["accuracy"]["scratch"][1] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    gain = report["gains"]["kd"]
    assert gain["first"] == pytest.approx(0.02) and gain["last"] == pytest.approx(0.10)
    assert gain["slope"] > 0 and gain["spearman"] == pytest.approx(1.0)
    assert report["curves"]["teacher"]["slope"] == pytest.approx(-0.0643, abs=1e-3)
    assert "scratch" not in report["gains"]
    table = report_markdown(report)
    assert "| gain kd | agree scratch | agree kd |" in table.splitlines()[4]
    assert "+2.00 ± 0.00" in table and "| kd | +2.00 | +10.00 |" in table


def test_a_flat_gain_has_no_rank_correlation() -> None:
    splits = [{"index": i, "fid": float(i + 1), "train_samples": 1, "test_samples": 1} for i in range(3)]
    per_split = [_results({"scratch": [0.5], "kd": [0.6]}, [0.9]) for _ in range(3)]
    report = build_report("flat", splits, per_split, ["scratch", "kd"], "scratch")
    assert math.isnan(report["gains"]["kd"]["spearman"])
    assert report["gains"]["kd"]["slope"] == pytest.approx(0.0, abs=1e-12)
