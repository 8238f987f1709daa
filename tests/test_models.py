"""Tests of the model registry, BatchNorm init, position encodings and parameter groups."""

import functools
import logging
import math

import pytest
import torch
from torch import nn

from fedsign.errors import UserInputError
from fedsign.models import (
    PositionEncoding,
    build_model,
    list_models,
    parameter_groups,
    parse_model_name,
    select_parameters,
)

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
SEQUENCE_SHAPES = [(1, 40)]
ALL_SHAPES = IMAGE_SHAPES + SEQUENCE_SHAPES



def _is_sequence_model(name: str) -> bool:
    return parse_model_name(name).family.endswith("1d")


def _applicable_shapes(name: str) -> list[tuple[int, ...]]:
    """Shapes a model accepts, as the families document them."""
    if parse_model_name(name).family == "mlp":
        return ALL_SHAPES
    if _is_sequence_model(name):
        return SEQUENCE_SHAPES
    if name == "resnet18":
        # ResNet-18 has 11M parameters: one shape keeps the file fast.
        return [(3, 32, 32)]
    return IMAGE_SHAPES


def _build(name: str, shape: tuple[int, ...], seed: int = 0, **options: object) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, input_shape=shape, num_classes=10, **options)


@functools.cache
def _build_shared(name: str, shape: tuple[int, ...]) -> nn.Module:
    """Build once per (name, shape) for tests that only read the model; returned in eval mode."""
    return _build(name, shape).eval()


CASES = [(name, shape) for name in list_models() for shape in _applicable_shapes(name)]
MISMATCHED = [
    (name, shape)
    for name in list_models()
    if parse_model_name(name).family != "mlp"
    for shape in (IMAGE_SHAPES[:1] if _is_sequence_model(name) else SEQUENCE_SHAPES)
]


# --- Registry ---------------------------------------------------------------------------------


def test_list_models_covers_required_names() -> None:
    names = list_models()
    for required in ("mlp", "cnn", "cnn_bn", "lenet", "vgg8", "vgg11_bn", "vgg16", "resnet20",
                     "resnet20_w32", "resnet18", "cnn1d", "cnn1d_bn", "resnet1d"):
        assert required in names


def test_parse_model_name_splits_parts() -> None:
    parsed = parse_model_name("vgg11_bn_w32")
    assert parsed.family == "vgg"
    assert parsed.depth == 11
    assert parsed.batch_norm
    assert parsed.width == 32


def test_parse_model_name_keeps_1d_in_family() -> None:
    parsed = parse_model_name("cnn1d_bn")
    assert parsed.family == "cnn1d"
    assert parsed.depth is None
    assert parsed.batch_norm


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_model_output_shape(name: str, shape: tuple[int, ...]) -> None:
    model = _build_shared(name, shape)
    with torch.no_grad():
        logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, 10)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_forward_is_classifier_of_features(name: str, shape: tuple[int, ...]) -> None:
    model = _build_shared(name, shape)
    inputs = torch.randn(2, *shape)
    with torch.no_grad():
        representation = model.features(inputs)
        logits = model(inputs)
    assert isinstance(model.classifier, nn.Linear)
    assert representation.shape == (2, model.classifier.in_features)
    torch.testing.assert_close(logits, model.classifier(representation))


@pytest.mark.parametrize("name", list_models())
def test_build_is_deterministic_under_seed(name: str) -> None:
    shape = _applicable_shapes(name)[0]
    first = _build_shared(name, shape).state_dict()
    second = _build(name, shape, seed=0).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_build_depends_on_seed() -> None:
    first = _build("cnn", (1, 8, 8), seed=0).state_dict()
    other = _build("cnn", (1, 8, 8), seed=1).state_dict()
    assert not torch.equal(first["features.conv1.conv.weight"], other["features.conv1.conv.weight"])


@pytest.mark.parametrize(("name", "shape"), MISMATCHED)
def test_wrong_input_rank_raises(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(UserInputError, match=name) as error:
        _build(name, shape)
    assert "input_shape" in str(error.value)


def test_vgg_on_digits_skips_pools_at_size_one() -> None:
    model = _build("vgg11", (1, 8, 8))
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3


def test_resnet18_has_cifar_stem() -> None:
    model = _build("resnet18", (3, 32, 32))
    stem_conv = model.features.stem.conv
    assert stem_conv.kernel_size == (3, 3)
    assert stem_conv.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet20_width_sets_first_stage() -> None:
    model = _build("resnet20_w32", (3, 32, 32))
    assert model.features.stem.conv.out_channels == 32
    assert model.classifier.in_features == 128
    assert len(model.features.stage1) == 3


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("transformer", "transformer"),
        ("vgg13", "vgg13"),
        ("resnet19", "resnet19"),
        ("resnet", "resnet"),
        ("resnet20_bn", "resnet20_bn"),
        ("resnet18_w32", "resnet18_w32"),
        ("lenet_w8", "lenet_w8"),
        ("cnn3", "cnn3"),
        ("cnn_w0", "cnn_w0"),
        ("mlp0", "mlp0"),
        ("mlp1_bn", "mlp1_bn"),
        ("VGG11", "VGG11"),
    ],
)
def test_bad_model_name_raises(name: str, fragment: str) -> None:
    with pytest.raises(UserInputError, match=fragment):
        _build(name, (1, 8, 8))


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"bn_init": "zeros"}, "zeros"),
        ({"bn_init": "gaussian", "bn_init_std": -1.0}, "-1.0"),
        ({"position_encoding": "sinusoidal"}, "sinusoidal"),
        ({"position_encoding": "additive", "pe_amplitude": math.nan}, "nan"),
    ],
)
def test_bad_option_raises(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(UserInputError, match=fragment):
        _build("cnn_bn", (1, 8, 8), **options)


@pytest.mark.parametrize(("shape", "num_classes"), [((0, 8, 8), 10), ((1, 8, 8), 0)])
def test_bad_shape_or_class_count_raises(shape: tuple[int, ...], num_classes: int) -> None:
    with pytest.raises(UserInputError, match="input_shape|num_classes"):
        build_model("cnn", input_shape=shape, num_classes=num_classes)


# --- BatchNorm initialisation -----------------------------------------------------------------


def _bn_tensors(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    weights = torch.cat([m.weight.detach().flatten() for m in layers])
    biases = torch.cat([m.bias.detach().flatten() for m in layers])
    return weights, biases


@pytest.mark.parametrize("name", ["cnn_bn", "resnet20", "resnet18"])
def test_bn_init_ones_is_exactly_one(name: str) -> None:
    weights, biases = _bn_tensors(_build(name, (3, 32, 32), bn_init="ones"))
    assert torch.equal(weights, torch.ones_like(weights))
    assert torch.equal(biases, torch.zeros_like(biases))


def test_bn_init_uniform_within_unit_interval() -> None:
    weights, biases = _bn_tensors(_build("vgg11_bn", (1, 8, 8), bn_init="uniform"))
    assert weights.min() >= 0.0
    assert weights.max() <= 1.0
    assert 0.45 < weights.mean() < 0.55
    assert torch.equal(biases, torch.zeros_like(biases))


def test_bn_init_gaussian_matches_std() -> None:
    # Two BatchNorm layers of 4096 channels give 8192 draws. The sample std then has a standard
    # error of σ/sqrt(2·8192), about 0.8% of σ, so a 5% tolerance does not flake.
    model = _build("mlp_bn_w4096", (1, 8, 8), bn_init="gaussian", bn_init_std=0.2)
    weights, biases = _bn_tensors(model)
    assert weights.numel() == 8192
    assert abs(weights.mean().item()) < 0.01
    assert weights.std().item() == pytest.approx(0.2, rel=0.05)
    assert torch.equal(biases, torch.zeros_like(biases))


def test_bn_init_without_batch_norm_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedsign.models"):
        _build("cnn", (1, 8, 8), bn_init="uniform")
    assert "no BatchNorm" in caplog.text


# --- Position encodings -----------------------------------------------------------------------


def test_position_encoding_values() -> None:
    encoding = PositionEncoding(4, mode="multiplicative", amplitude=0.1, period=1.0)
    torch.testing.assert_close(encoding.encoding, torch.tensor([0.0, 0.1, 0.0, -0.1]))


def test_position_encoding_multiplies_channels() -> None:
    encoding = PositionEncoding(4, mode="multiplicative", amplitude=0.1, period=1.0)
    output = encoding(torch.full((2, 4, 3, 3), 2.0))
    expected = 2.0 * torch.tensor([1.0, 1.1, 1.0, 0.9]).view(1, 4, 1, 1).expand(2, 4, 3, 3)
    torch.testing.assert_close(output, expected)


def test_position_encoding_adds_to_channels() -> None:
    encoding = PositionEncoding(4, mode="additive", amplitude=0.1, period=1.0)
    output = encoding(torch.zeros(2, 4))
    torch.testing.assert_close(output, torch.tensor([[0.0, 0.1, 0.0, -0.1]] * 2))


def test_position_encoding_period_two() -> None:
    encoding = PositionEncoding(4, mode="additive", amplitude=1.0, period=2.0)
    torch.testing.assert_close(encoding.encoding, torch.zeros(4), atol=1e-6, rtol=0)


def test_position_encoding_has_no_parameters_or_state() -> None:
    encoding = PositionEncoding(8, mode="multiplicative", amplitude=0.1, period=1.0)
    assert list(encoding.parameters()) == []
    assert encoding.state_dict() == {}


@pytest.mark.parametrize("name", list_models())
def test_position_encoding_keeps_parameters(name: str) -> None:
    shape = _applicable_shapes(name)[0]
    plain = _build_shared(name, shape)
    encoded = _build(name, shape, position_encoding="multiplicative")
    plain_state, encoded_state = plain.state_dict(), encoded.state_dict()
    assert plain_state.keys() == encoded_state.keys()
    for key in plain_state:
        assert torch.equal(plain_state[key], encoded_state[key]), key


@pytest.mark.parametrize(
    ("name", "shape", "count"),
    [
        ("mlp", (1, 40), 2),
        ("cnn", (1, 8, 8), 3),
        ("lenet_bn", (1, 28, 28), 4),
        ("vgg11_bn", (1, 8, 8), 10),
        ("resnet20", (1, 8, 8), 19),
        ("resnet18", (3, 32, 32), 9),
        ("cnn1d", (1, 40), 3),
        ("resnet1d", (1, 40), 19),
    ],
)
def test_position_encoding_in_every_hidden_layer(
    name: str, shape: tuple[int, ...], count: int
) -> None:
    model = _build(name, shape, position_encoding="additive")
    encodings = [m for m in model.modules() if isinstance(m, PositionEncoding)]
    assert len(encodings) == count


def test_position_encoding_changes_output() -> None:
    inputs = torch.randn(2, 1, 8, 8)
    plain = _build("cnn_bn", (1, 8, 8)).eval()
    encoded = _build(
        "cnn_bn", (1, 8, 8), position_encoding="multiplicative", pe_amplitude=0.5
    ).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(inputs), encoded(inputs))


def test_position_encoding_disabled_by_default() -> None:
    model = _build("resnet20", (1, 8, 8))
    assert not any(isinstance(m, PositionEncoding) for m in model.modules())


# --- Parameter groups -------------------------------------------------------------------------


CNN_BN_FIRST_BLOCK = [
    "features.conv1.conv.weight", "features.conv1.bn.weight", "features.conv1.bn.bias"
]
CNN_BN_BN_WEIGHTS = [
    "features.conv1.bn.weight", "features.conv2.bn.weight", "features.fc1.bn.weight"
]
CNN_BN_NAMES = [
    "features.conv1.conv.weight",
    "features.conv1.bn.weight",
    "features.conv1.bn.bias",
    "features.conv2.conv.weight",
    "features.conv2.bn.weight",
    "features.conv2.bn.bias",
    "features.fc1.linear.weight",
    "features.fc1.bn.weight",
    "features.fc1.bn.bias",
    "classifier.weight",
    "classifier.bias",
]


def test_parameter_groups_cnn_bn() -> None:
    model = _build("cnn_bn", (1, 8, 8))
    assert [name for name, _ in model.named_parameters()] == CNN_BN_NAMES
    assert parameter_groups(model) == {
        "bn_weight": CNN_BN_BN_WEIGHTS,
        "bn_bias": ["features.conv1.bn.bias", "features.conv2.bn.bias", "features.fc1.bn.bias"],
        "classifier": ["classifier.weight", "classifier.bias"],
        "conv_weight": ["features.conv1.conv.weight", "features.conv2.conv.weight"],
        "other_weight": ["features.fc1.linear.weight"],
        "other_bias": [],
    }


def test_parameter_groups_cnn_without_bn() -> None:
    groups = parameter_groups(_build("cnn", (1, 8, 8)))
    assert groups["other_bias"] == [
        "features.conv1.conv.bias", "features.conv2.conv.bias", "features.fc1.linear.bias"
    ]
    assert groups["bn_weight"] == []


@pytest.mark.parametrize("name", list_models())
def test_parameter_groups_partition_all_parameters(name: str) -> None:
    model = _build_shared(name, _applicable_shapes(name)[0])
    grouped = [n for names in parameter_groups(model).values() for n in names]
    assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())


def test_parameter_groups_exclude_buffers() -> None:
    grouped = [n for names in parameter_groups(_build("cnn_bn", (1, 8, 8))).values() for n in names]
    assert not any("running" in n or "num_batches_tracked" in n for n in grouped)


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("all", CNN_BN_NAMES),
        ("classifier", ["classifier.weight", "classifier.bias"]),
        ("features", CNN_BN_NAMES[:-2]),
        ("first_block", CNN_BN_FIRST_BLOCK),
        ("conv", ["features.conv1.conv.weight", "features.conv2.conv.weight"]),
        ("bn", [n for n in CNN_BN_NAMES if ".bn." in n]),
        ("bn_weight", CNN_BN_BN_WEIGHTS),
        ("re:^features\\.conv2\\.", CNN_BN_NAMES[3:6]),
    ],
)
def test_select_parameters_cnn_bn(group: str, expected: list[str]) -> None:
    assert select_parameters(_build("cnn_bn", (1, 8, 8)), group) == expected


def test_select_first_block_of_resnets() -> None:
    expected = ["features.stem.conv.weight", "features.stem.bn.weight", "features.stem.bn.bias"]
    assert select_parameters(_build("resnet20", (1, 8, 8)), "first_block") == expected
    assert select_parameters(_build("resnet18", (3, 32, 32)), "first_block") == expected


def test_select_first_block_of_mlp() -> None:
    model = _build("mlp_bn", (1, 40))
    assert select_parameters(model, "first_block") == [
        "features.fc1.linear.weight", "features.fc1.bn.weight", "features.fc1.bn.bias"
    ]


@pytest.mark.parametrize(
    ("name", "group", "fragment"),
    [
        ("cnn_bn", "weights", "weights"),
        ("cnn", "bn", "selects no parameters"),
        ("cnn", "re:^nothing$", "selects no parameters"),
        ("cnn", "re:(", "invalid regular expression"),
        ("mlp1", "first_block", "selects no parameters"),
    ],
)
def test_bad_selection_raises(name: str, group: str, fragment: str) -> None:
    with pytest.raises(UserInputError, match=fragment):
        select_parameters(_build(name, (1, 8, 8)), group)
