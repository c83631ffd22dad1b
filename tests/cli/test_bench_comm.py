"""`distill bench comm` end to end: the model's report, the measured overhead, and bad options."""

from __future__ import annotations

import json

import pytest

from distill.cli import main


@pytest.mark.slow
def test_bench_comm_writes_the_model_and_the_measurement(tmp_path, capsys):
    assert main(["bench", "comm", "--tiny", "--output-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "comm.json").read_text())
    assert result["kind"] == "model"
    algorithms = {row["algorithm"] for row in result["table"]}
    assert algorithms == {"ps", "ring", "bml"}
    testbed = [row for row in result["table"] if row["servers"] == 9 and row["algorithm"] == "bml"]
    assert testbed and all(row["over_ps"] == pytest.approx(0.5, rel=1e-3) for row in testbed)
    (measured,) = result["measured"]
    assert measured["processes"] == 4 and measured["cube"] == "BCube(2,1)"
    assert measured["bml_ms"] > 0 and measured["all_reduce_ms"] > 0
    assert measured["max_abs_difference"] < 1e-6  # the two synchronizations agree
    markdown = (tmp_path / "comm.md").read_text()
    assert "not a measurement" in markdown and "BCube(3,1)" in markdown
    assert (tmp_path / "comm.png").read_bytes()[:4] == b"\x89PNG"
    assert "BML" in capsys.readouterr().out


def test_bench_comm_model_only_and_bad_network(tmp_path, capsys):
    assert main(["bench", "comm", "--model-only", "--output-dir", str(tmp_path), "--latency-us", "0"]) == 0
    assert json.loads((tmp_path / "comm.json").read_text())["measured"] == []
    assert (
        main(["bench", "comm", "--model-only", "--bandwidth-gbps", "0", "--output-dir", str(tmp_path)]) == 2
    )
    assert "--bandwidth-gbps" in capsys.readouterr().err
