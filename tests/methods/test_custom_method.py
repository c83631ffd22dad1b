"""The README's "Writing a method" example, run as a user would: register, then validate and train."""

import subprocess
import sys
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    start = text.index("```python", text.index("## Writing a method")) + len("```python")
    return text[start : text.index("```", start)]


def test_readme_custom_method_registers_validates_and_trains(tmp_path):
    script = readme_example() + textwrap.dedent(
        """
        import torch
        from distill.config import validate_recipe
        from distill.methods import build_method
        from distill.models import build_model

        recipe = validate_recipe({
            "name": "custom", "data": {"name": "synthetic", "num_samples": 64, "num_test": 16},
            "students": [{"name": "s", "model": {"name": "mlp", "hidden": [8]},
                          "method": {"name": "smooth", "smoothing": 0.2}}],
        })
        spec = recipe.students[0].method
        assert spec.smoothing == 0.2
        student = build_model(recipe.students[0].model, (32,), 10)
        method = build_method(spec, MethodContext(student, None, torch.zeros(2, 32), 10))
        batch = Batch(torch.randn(4, 32), torch.tensor([0, 1, 2, 3]), torch.arange(4), 10)
        loss = method.step(batch)["ce"]
        loss.backward()
        print("ok", float(loss))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ok")
