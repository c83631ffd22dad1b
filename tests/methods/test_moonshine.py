import json

import pytest
import torch
import torch.nn.functional as F

from distill.cli import main
from distill.errors import DistillError
from distill.methods import Batch, MethodContext, build_method
from distill.methods.kd import FeaturePairSpec
from distill.methods.moonshine import MoonshineSpec, matched_blocks
from distill.models import build_model
from distill.models.cheap import CheapSpec
from distill.models.cnn import CNN1dSpec, CNN2dSpec
from distill.models.mlp import MLPSpec
from distill.models.resnet import ResNetSpec, WRNSpec
from distill.models.taps import FeatureTaps
from tests.conftest import tiny_recipe


@pytest.mark.parametrize(
    ("spec", "shape", "expected"),
    [
        (WRNSpec(depth=10, widen_factor=2), (3, 16, 16), ["block1", "block2", "block3"]),
        (ResNetSpec(depth=8, width=2), (3, 16, 16), ["layer1", "layer2", "layer3"]),
        # a plain CNN's first block is its stem (conv + BN + ReLU): left out, as the WRN's conv1
        (CNN1dSpec(channels=[16, 16, 16], kernel_size=5, stride=2), (1, 40), ["features.1", "features.2"]),
        # ... whatever the number of stages (the old rule kept it below three)
        (CNN2dSpec(channels=[8, 16]), (1, 8, 8), ["features.1"]),
    ],
)
def test_attention_pairs_are_the_matched_group_outputs(spec, shape, expected):
    teacher = build_model(spec, shape, 5)
    student = build_model(CheapSpec(base=spec.model_dump()), shape, 5)
    assert matched_blocks(student, teacher, torch.randn(2, *shape)) == expected


def official_at_loss(x, y):
    """``szagoruyko/attention-transfer`` ``utils.at_loss``, written out here."""

    def at(feature):
        return F.normalize(feature.pow(2).mean(1).view(feature.size(0), -1))

    return (at(x) - at(y)).pow(2).mean()


def _terms_and_features(spec, shape, method_spec):
    torch.manual_seed(0)
    teacher = build_model(spec, shape, 5).eval()
    student = build_model(CheapSpec(base=spec.model_dump()), shape, 5)
    inputs = torch.randn(6, *shape)
    method = build_method(method_spec, MethodContext(student, teacher, inputs[:4], 5))
    method.eval()  # BN in eval: the taps below see the same features
    terms = method.step(Batch(inputs, torch.arange(6) % 5, torch.arange(6), 5))
    layers = [name.split(":", 1)[1] for name in terms if name.startswith("attention:")]
    student_taps, teacher_taps = FeatureTaps(student, layers), FeatureTaps(teacher, layers)
    with torch.no_grad():
        logits = student(inputs)
        teacher(inputs)
    ce = F.cross_entropy(logits, torch.arange(6) % 5)
    pairs = {name: (student_taps.features[name], teacher_taps.features[name]) for name in layers}
    return terms, ce, pairs


def test_raw_scale_is_the_official_loss_beta_times_each_group():
    # three groups: Moonshine's adjusted_beta = β·3/3 = β, i.e. attention-transfer's
    # `distillation(...) + opt.beta * sum(loss_groups)` with alpha = 0 (CE alone)
    spec = ResNetSpec(depth=8, width=2)
    terms, ce, pairs = _terms_and_features(spec, (3, 16, 16), MoonshineSpec(beta=1000.0, beta_scale="raw"))
    assert set(terms) == {"ce", "attention:layer1", "attention:layer2", "attention:layer3"}
    for name, (student_feature, teacher_feature) in pairs.items():
        torch.testing.assert_close(
            terms[f"attention:{name}"], 1000.0 * official_at_loss(student_feature, teacher_feature)
        )
    official = ce + 1000.0 * sum(official_at_loss(s, t) for s, t in pairs.values())
    torch.testing.assert_close(sum(terms.values()), official)


def test_groups_are_weighted_three_beta_over_their_number():
    # two groups (a cnn1d's features.1, features.2): 3β/2 = 1500 each, Moonshine's
    # `adjusted_beta = (args.beta*3)/len(ints_student)`; on the size-free scale the map of N
    # positions is weighted N / N_ref more than the official mean over positions
    spec = CNN1dSpec(channels=[16, 16, 16], kernel_size=5, stride=2)
    for scale in ("raw", "size_free"):
        terms, _ce, pairs = _terms_and_features(spec, (1, 40), MoonshineSpec(beta=1000.0, beta_scale=scale))
        assert set(pairs) == {"features.1", "features.2"}
        for name, (student_feature, teacher_feature) in pairs.items():
            positions = student_feature.shape[-1]
            factor = 1.0 if scale == "raw" else positions * 7 / 1024
            torch.testing.assert_close(
                terms[f"attention:{name}"],
                1500.0 * factor * official_at_loss(student_feature, teacher_feature),
            )


def test_default_scale_pulls_each_sample_the_same_in_total_at_any_map_size():
    # size_free (default): (3β/n) · Σ_j Σ_b ‖d_b^j‖² / (B · 1024/7)
    spec = ResNetSpec(depth=8, width=2)
    terms, _ce, pairs = _terms_and_features(spec, (3, 16, 16), MoonshineSpec())
    for name, (student_feature, teacher_feature) in pairs.items():
        difference = F.normalize(student_feature.pow(2).mean(1).flatten(1)) - F.normalize(
            teacher_feature.pow(2).mean(1).flatten(1)
        )
        expected = 1000.0 * difference.pow(2).sum() / (6 * 1024 / 7)
        torch.testing.assert_close(terms[f"attention:{name}"], expected)


def test_a_student_without_matching_blocks_is_refused():
    teacher = build_model(ResNetSpec(depth=8, width=1), (3, 16, 16), 5)
    student = build_model(MLPSpec(hidden=[8]), (3, 16, 16), 5)
    with pytest.raises(DistillError, match="share no block"):
        build_method(MoonshineSpec(), MethodContext(student, teacher, torch.randn(4, 3, 16, 16), 5))


def test_moonshine_run_and_onnx_export_of_the_cheap_student(tmp_path, write_recipe, capsys):
    teacher = {"name": "cnn1d", "channels": [16, 16, 16], "kernel_size": 5, "stride": 2}
    recipe = tiny_recipe(
        teacher={"model": teacher},
        students=[
            {
                "name": "cheap",
                "model": {"name": "cheap", "base": teacher, "block": "G", "groups": 4},
                "method": {"name": "moonshine"},
            }
        ],
    )
    out = tmp_path / "run"
    assert main(["run", str(write_recipe(recipe)), "--output-dir", str(out), "--quiet"]) == 0
    rows = {row["name"]: row for row in json.loads((out / "summary.json").read_text())["results"]}
    assert rows["cheap"]["params"] < rows["teacher"]["params"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "train_attention:features.2" in metrics[-1]
    capsys.readouterr()
    assert main(["export", str(out / "cheap" / "last.safetensors"), "--check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parity_max_abs_diff"] <= 1e-4


def test_feature_pairs_carry_the_scale_for_attention_only():
    assert FeaturePairSpec(student="a", teacher="a", loss="attention").beta_scale == "size_free"
    assert FeaturePairSpec(student="a", teacher="a", loss="attention", beta_scale="raw").beta_scale == "raw"
    with pytest.raises(ValueError, match="beta_scale applies to attention pairs only"):
        FeaturePairSpec(student="a", teacher="a", loss="hint", beta_scale="raw")


def test_a_hint_pair_written_out_in_full_validates_again():
    """A resolved recipe dumps every field, ``beta_scale`` at its default included; reading it
    back (``distill compare`` re-validates each dumped recipe) must not refuse the hint pair."""
    dumped = FeaturePairSpec(student="a", teacher="b").model_dump(mode="json")
    assert dumped["beta_scale"] == "size_free"
    assert FeaturePairSpec.model_validate(dumped).loss == "hint"
