"""`--plugin MODULE`: a user's registrations reach the recipe schema, `list` and `run`."""

import json
import subprocess
import sys
import textwrap

import yaml

from tests.conftest import tiny_recipe

PLUGIN = textwrap.dedent(
    """
    from typing import Literal

    import torch.nn.functional as F

    from distill.methods import Method, MethodContext, MethodSpec
    from distill.methods.registry import METHODS


    class SmoothSpec(MethodSpec):
        name: Literal["smooth"] = "smooth"
        smoothing: float = 0.1


    class Smooth(Method):
        def __init__(self, student, smoothing):
            super().__init__(student)
            self.smoothing = smoothing

        def step(self, batch):
            logits = self.student(batch.inputs)
            return {"ce": F.cross_entropy(logits, batch.targets, label_smoothing=self.smoothing)}


    @METHODS.register_factory("smooth", "cross-entropy with label smoothing (a plugin)")
    def build_smooth(spec: SmoothSpec, context: MethodContext) -> Method:
        return Smooth(context.student, spec.smoothing)
    """
)


def distill(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "distill", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**__import__("os").environ, "PYTHONPATH": str(cwd)},
    )


def test_plugin_method_is_listed_validated_and_trained(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    listed = distill("list", "--plugin", "my_plugin", cwd=tmp_path)
    assert listed.returncode == 0 and "label smoothing (a plugin)" in listed.stdout
    recipe = tiny_recipe(teacher=None, train={"epochs": 1})
    recipe["students"] = [
        {"name": "s", "model": {"name": "mlp", "hidden": [8]}, "method": {"name": "smooth", "smoothing": 0.2}}
    ]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    ran = distill("run", "r.yaml", "--plugin", "my_plugin", "--output-dir", "out", "--quiet", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["results"][0]["method"] == "smooth"
    without = distill("run", "r.yaml", "--output-dir", "out2", cwd=tmp_path)
    assert without.returncode == 2 and "unknown method 'smooth'" in without.stderr
    missing = distill("run", "r.yaml", "--plugin", "no_such_plugin_xyz", cwd=tmp_path)
    assert missing.returncode == 2 and "--plugin no_such_plugin_xyz: cannot import it" in missing.stderr
