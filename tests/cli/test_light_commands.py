"""Commands that only read JSON do not pay for PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys


def test_summarize_reads_runs_without_importing_torch(tmp_path):
    for seed, accuracy in [(0, 0.9), (1, 0.8)]:
        run = tmp_path / f"run{seed}"
        run.mkdir()
        result = {
            "name": "kd",
            "role": "student",
            "method": "kd",
            "test_accuracy": accuracy,
            "params": 10,
            "seconds": 1.0,
        }
        (run / "summary.json").write_text(json.dumps({"recipe": "r", "seed": seed, "results": [result]}))
    script = (
        "import sys\n"
        "from distill.cli import main\n"
        f"status = main(['summarize', r'{tmp_path / 'run0'}', r'{tmp_path / 'run1'}', '--json'])\n"
        "assert status == 0, status\n"
        "assert 'torch' not in sys.modules, 'summarize imported torch'\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    aggregate = json.loads(completed.stdout)
    assert aggregate["models"]["kd"]["test_accuracy"] == [0.9, 0.8]
    assert abs(aggregate["models"]["kd"]["mean"] - 0.85) < 1e-9
