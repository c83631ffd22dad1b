import pytest
import torch
from torch import nn

from distill.errors import DistillError
from distill.models import FeatureTaps, ImportedModelSpec, build_model, count_parameters
from distill.models.cnn import CNN1dSpec, CNN2dSpec
from distill.models.mlp import MLPSpec
from distill.models.resnet import ResNetSpec, WRNSpec


@pytest.mark.parametrize(
    ("spec", "input_shape"),
    [
        (MLPSpec(hidden=[16, 8], dropout=0.1), (1, 40)),
        (MLPSpec(activation="gelu"), (3, 8, 8)),
        (CNN1dSpec(channels=[8, 8]), (1, 40)),
        (CNN1dSpec(head="avgpool"), (40,)),
        (CNN2dSpec(channels=[8, 16]), (1, 8, 8)),
        (ResNetSpec(depth=8, width=1), (3, 16, 16)),
        (WRNSpec(depth=10, widen_factor=1, dropout=0.1), (3, 16, 16)),
    ],
)
def test_every_model_maps_a_batch_to_class_logits(spec, input_shape):
    model = build_model(spec, input_shape, num_classes=7)
    logits = model(torch.randn(4, *input_shape))
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet_x4_shapes_match_the_kd_literature():
    # RepDistiller's resnet8x4 / resnet32x4 on 100 classes: 1.23M and 7.43M parameters
    assert count_parameters(build_model(ResNetSpec(depth=8, width=4), (3, 32, 32), 100)) == 1_233_540
    assert count_parameters(build_model(ResNetSpec(depth=32, width=4), (3, 32, 32), 100)) == 7_433_860


def test_resnet_and_wrn_depth_rules():
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNetSpec(depth=9)
    with pytest.raises(ValueError, match="6n\\+4"):
        WRNSpec(depth=12)


def test_models_reject_inputs_of_the_wrong_rank():
    with pytest.raises(ValueError, match="channels, height, width"):
        build_model(CNN2dSpec(), (1, 40), 10)
    with pytest.raises(ValueError, match="too small"):
        build_model(CNN2dSpec(channels=[4] * 4), (1, 8, 8), 10)


def test_taps_read_named_layers_and_leave_no_hooks():
    model = build_model(ResNetSpec(depth=8, width=1), (3, 16, 16), 10)
    taps = FeatureTaps(model, ["layer2", "layer3"])
    model(torch.randn(2, 3, 16, 16))
    assert taps.features["layer2"].shape == (2, 32, 8, 8)
    assert taps.features["layer3"].shape == (2, 64, 4, 4)
    taps.remove()
    assert not model.layer2._forward_hooks and not taps.features


def test_taps_are_per_instance_not_per_class():
    first = build_model(MLPSpec(hidden=[4]), (3,), 2)
    second = build_model(MLPSpec(hidden=[4]), (3,), 2)
    taps = FeatureTaps(first, ["body"])
    second(torch.randn(1, 3))
    assert taps.features == {}
    first(torch.randn(1, 3))
    assert taps.features["body"].shape == (1, 4)


def test_unknown_tap_lists_available_layers():
    model = build_model(MLPSpec(hidden=[4]), (3,), 2)
    with pytest.raises(DistillError, match=r"unknown layer 'bdy' \(did you mean 'body'\?\).*head"):
        FeatureTaps(model, ["bdy"])


def make_linear(in_features: int = 4, num_classes: int = 3) -> nn.Module:
    return nn.Linear(in_features, num_classes)


def test_imported_factory_and_its_errors():
    model = build_model(
        ImportedModelSpec(name="tests.models.test_models:make_linear", kwargs={"in_features": 5}),
        (5,),
        3,
    )
    assert model(torch.randn(2, 5)).shape == (2, 3)
    with pytest.raises(DistillError, match="cannot import module"):
        build_model(ImportedModelSpec(name="no_such_module_xyz:f"), (5,), 3)
    with pytest.raises(DistillError, match="has no attribute"):
        build_model(ImportedModelSpec(name="tests.models.test_models:missing"), (5,), 3)
    with pytest.raises(DistillError, match="returned dict"):
        build_model(ImportedModelSpec(name="builtins:dict", kwargs={"a": 1}), (5,), 3)
    with pytest.raises(DistillError, match="rejected its kwargs"):
        build_model(ImportedModelSpec(name="builtins:len", kwargs={"obj": [1]}), (5,), 3)
