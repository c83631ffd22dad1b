import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.models import build_model, count_parameters
from distill.models.cheap import CheapSpec, cheap_block, cheapen
from distill.models.cnn import CNN1dSpec
from distill.models.resnet import ResNetSpec, WRNSpec

CASES = {
    "wrn": (WRNSpec(depth=10, widen_factor=2), (3, 16, 16)),
    "resnet": (ResNetSpec(depth=8, width=2), (3, 16, 16)),
    "cnn1d": (CNN1dSpec(channels=[16, 16, 16], kernel_size=5, stride=2), (1, 40)),
}


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize(("block", "groups", "bottleneck"), [("G", 4, 2), ("B", 4, 2), ("BG", 2, 2)])
def test_cheapened_models_keep_names_and_shapes_and_shrink(kind, block, groups, bottleneck):
    spec, shape = CASES[kind]
    teacher = build_model(spec, shape, 5)
    student, report = cheapen(teacher, block, groups, bottleneck, torch.zeros(2, *shape))
    assert report.replaced and count_parameters(student) < count_parameters(teacher)
    inputs = torch.randn(3, *shape)
    assert student(inputs).shape == (3, 5)
    teacher_names = {name for name, _ in teacher.named_modules()}
    assert teacher_names <= {name for name, _ in student.named_modules()}  # every name kept
    for name in report.replaced:
        original, cheap = teacher.get_submodule(name), student.get_submodule(name)
        assert isinstance(cheap, nn.Sequential)
        assert (
            cheap[0].in_channels == original.in_channels and cheap[-1].out_channels == original.out_channels
        )
        if block == "G":
            assert cheap.convdw.groups == groups and cheap.conv1x1.kernel_size in ((1,), (1, 1))
        else:
            assert cheap.conv.in_channels == original.out_channels // bottleneck
            assert cheap.conv.groups == (groups if block == "BG" else 1)
    assert any("stem" in reason for reason in report.left.values())  # the stem stays


def test_ineligible_convolutions_are_listed_with_the_reason():
    spec, shape = CASES["resnet"]
    _student, report = cheapen(build_model(spec, shape, 5), "G", 3, 2, torch.zeros(2, *shape))
    assert not report.replaced  # 16/32/64 channels are not divisible by 3 groups
    assert any("not divisible by 3 groups" in reason for reason in report.left.values())
    assert any(reason == "already pointwise" for reason in report.left.values())
    with pytest.raises(ValueError, match="no convolution of 'resnet' can be made cheap"):
        build_model(CheapSpec(base=spec.model_dump(), groups=3), shape, 5)


def test_cheap_spec_rebuilds_the_same_architecture():
    spec, shape = CASES["wrn"]
    cheap = CheapSpec(base=spec.model_dump(), block="BG", groups=2, bottleneck=2)
    first, second = build_model(cheap, shape, 5), build_model(cheap, shape, 5)
    assert {k: v.shape for k, v in first.state_dict().items()} == {
        k: v.shape for k, v in second.state_dict().items()
    }


def _kinds(block: nn.Sequential) -> list[str]:
    names = {
        nn.Conv2d: "conv",
        nn.Conv1d: "conv",
        nn.BatchNorm2d: "bn",
        nn.BatchNorm1d: "bn",
        nn.ReLU: "relu",
    }
    return [names[type(module)] for module in block]


def test_blocks_are_the_official_ones_with_batch_norm_and_relu_inside():
    # pytorch-moonshine models/blocks.py: DConv = conv1x1(relu(bn(convdw(x)))), and
    # ConvBottleneck = conv1x1_up(relu(bn2(conv(relu(bn1(conv1x1_down(x)))))))
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    grouped = cheap_block(conv, "G", groups=4, bottleneck=2)
    assert [name for name, _ in grouped.named_children()] == ["convdw", "bn", "relu", "conv1x1"]
    assert _kinds(grouped) == ["conv", "bn", "relu", "conv"]
    assert (grouped.convdw.in_channels, grouped.convdw.out_channels, grouped.convdw.groups) == (8, 8, 4)
    assert grouped.convdw.stride == (2, 2) and grouped.bn.num_features == 8
    assert (grouped.conv1x1.in_channels, grouped.conv1x1.out_channels) == (8, 16)
    for block, middle_groups in (("B", 1), ("BG", 4)):
        bottleneck = cheap_block(conv, block, groups=4, bottleneck=2)
        assert [name for name, _ in bottleneck.named_children()] == [
            "conv1x1_down", "bn1", "relu1", "conv", "bn2", "relu2", "conv1x1_up"
        ]  # fmt: skip
        assert _kinds(bottleneck) == ["conv", "bn", "relu", "conv", "bn", "relu", "conv"]
        assert bottleneck.conv.groups == middle_groups and bottleneck.conv.stride == (2, 2)
    assert _kinds(cheap_block(nn.Conv1d(8, 8, 5, padding=2), "G", 4, 2)) == ["conv", "bn", "relu", "conv"]
    assert isinstance(cheap_block(nn.Conv1d(8, 8, 5, padding=2), "B", 4, 2).bn2, nn.BatchNorm1d)


def test_grouped_block_computes_the_official_forward():
    torch.manual_seed(0)
    block = cheap_block(nn.Conv2d(8, 16, 3, padding=1), "G", groups=4, bottleneck=2).train()
    inputs = torch.randn(5, 8, 6, 6)
    grouped = F.conv2d(inputs, block.convdw.weight, padding=1, groups=4)
    normalized = F.batch_norm(grouped, None, None, block.bn.weight, block.bn.bias, training=True)
    expected = F.conv2d(F.relu(normalized), block.conv1x1.weight, block.conv1x1.bias)
    torch.testing.assert_close(block(inputs), expected)
    assert block.conv1x1.bias is not None  # the original's bias moves to the last convolution


@pytest.mark.parametrize(
    ("block", "groups", "bottleneck", "expected"),
    [
        # G(4): grouped 8→8 (4 groups) 8·(8/4)·3·3 = 144, BN(8) 16, pointwise 8·16 = 128
        ("G", 4, 2, 144 + 16 + 128),
        # B(2), width 16/2 = 8: 1×1 8·8 = 64, BN 16, 3×3 8·8·9 = 576, BN 16, 1×1 8·16 = 128
        ("B", 4, 2, 64 + 16 + 576 + 16 + 128),
        # B(4), width 4: 8·4 = 32, BN 8, 4·4·9 = 144, BN 8, 4·16 = 64
        ("B", 4, 4, 32 + 8 + 144 + 8 + 64),
        # BG(2, 4), width 8, middle 3×3 in 4 groups: 8·(8/4)·9 = 144
        ("BG", 4, 2, 64 + 16 + 144 + 16 + 128),
    ],
)
def test_parameter_counts_of_each_block_by_hand(block, groups, bottleneck, expected):
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)  # 8·16·9 = 1152 parameters
    assert count_parameters(cheap_block(conv, block, groups, bottleneck)) == expected < 1152


def test_parameter_count_of_the_quickstart_g4_student_by_hand():
    # cnn1d 64-64-64, kernel 5, on MNIST-1D (40 long, 10 classes): the teacher has 44,874
    # parameters, two of them in 64→64 convolutions of 64·64·5 = 20,480; G(4) replaces each with
    # 64·16·5 + 2·64 + 64·64 = 9,344
    spec = CNN1dSpec(channels=[64, 64, 64], kernel_size=5, stride=2)
    teacher = build_model(spec, (40,), 10)
    student = build_model(CheapSpec(base=spec.model_dump(), block="G", groups=4), (40,), 10)
    assert count_parameters(teacher) == 44_874
    assert count_parameters(student) == 44_874 - 2 * 20_480 + 2 * 9_344


def test_grouped_block_needs_only_the_input_channels_divisible():
    # the grouped convolution maps C_in → C_in; the pointwise one changes the width
    student, report = cheapen(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 6, 3)), "G", 4, 2)
    assert report.replaced == ["1"]
    assert student(torch.randn(2, 3, 9, 9)).shape == (2, 6, 5, 5)
    _student, report = cheapen(nn.Sequential(nn.Conv2d(3, 6, 3), nn.Conv2d(6, 8, 3)), "G", 4, 2)
    assert report.left["1"] == "6 input channels not divisible by 4 groups"
