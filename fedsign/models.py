"""Model registry: parseable model names, BatchNorm initialisation and FedPAN position encodings.

A model name is ``<family>[<depth>][_bn][_w<width>]``, parsed by :func:`parse_model_name`:

- ``family`` selects a builder registered with :func:`register_model` (``mlp``, ``cnn``,
  ``lenet``, ``vgg``, ``resnet``, ``cnn1d``, ``resnet1d``);
- ``depth`` is the number the family is known by (``vgg11``, ``resnet20``, ``mlp3``);
- ``_bn`` adds BatchNorm after every hidden conv or linear layer (ResNets always have it);
- ``_w<width>`` sets the width of the first stage: the channels of the first conv layer, or the
  hidden width of an MLP. Later stages scale with it as in the family's default layout.

Every model is a :class:`FeatureClassifier`: ``model.features`` maps an input batch to flat
representation vectors and ``model.classifier`` is the final ``nn.Linear``, so that
``model(x) == model.classifier(model.features(x))``. Contrastive objectives (MOON) and the
analysis code rely on that split.

Weights use PyTorch's default initialisation, except that torchvision's ResNet-18 keeps its own.
Seeding is the caller's job: ``torch.manual_seed`` before :func:`build_model` makes the build
deterministic.
"""

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from fedsign.errors import UserInputError

logger = logging.getLogger(__name__)

BN_INITS = ("ones", "uniform", "gaussian")
POSITION_ENCODINGS = ("none", "multiplicative", "additive")
PARAMETER_GROUPS = (
    "bn_weight", "bn_bias", "classifier", "conv_weight", "other_weight", "other_bias"
)
SELECTIONS = (
    "all", "classifier", "features", "first_block", "conv", "bn", "bn_weight", "re:<regex>"
)

_NAME_PATTERN = re.compile(
    r"^(?P<family>[a-z]+(?:1d)?)(?P<depth>\d+)?(?P<batch_norm>_bn)?(?:_w(?P<width>\d+))?$"
)
_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d}
_AVG_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


# ---------------------------------------------------------------------------------------------
# Names, options and the registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelName:
    """Parts of a model name, with ``None`` for a part that the name leaves out."""

    name: str
    family: str
    depth: int | None
    batch_norm: bool
    width: int | None


@dataclass(frozen=True)
class PositionEncodingConfig:
    """FedPAN position encoding settings, with ``mode`` one of :data:`POSITION_ENCODINGS`."""

    mode: str = "none"
    amplitude: float = 0.1
    period: float = 1.0

    @property
    def enabled(self) -> bool:
        """Whether hidden layers get a :class:`PositionEncoding`."""
        return self.mode != "none"


@dataclass(frozen=True)
class ModelSpec:
    """Everything a family builder needs: the parsed name, the data shape and the encoding."""

    name: ModelName
    input_shape: tuple[int, ...]
    num_classes: int
    encoding: PositionEncodingConfig


Builder = Callable[[ModelSpec], nn.Module]


@dataclass(frozen=True)
class _Family:
    builder: Builder
    examples: tuple[str, ...]
    spatial_dims: int | None


# Family name -> builder and metadata, filled by @register_model when this module is imported.
_FAMILIES: dict[str, _Family] = {}


def register_model(
    family: str, *, examples: Sequence[str] = (), spatial_dims: int | None = 2
) -> Callable[[Builder], Builder]:
    """Register a builder for a model family.

    Parameters
    ----------
    family : str
        Lowercase family name, optionally ending in ``1d``. Model names of this family are
        ``<family>[<depth>][_bn][_w<width>]``.
    examples : sequence of str, default ()
        Model names of this family that :func:`list_models` returns, ``(family,)`` when empty.
    spatial_dims : int or None, default 2
        2 for image inputs ``(channels, height, width)``, 1 for sequences ``(channels, length)``,
        None for any input shape.

    Returns
    -------
    Callable
        A decorator that registers ``builder(spec: ModelSpec) -> nn.Module`` and returns it
        unchanged. The builder must return a module with ``features`` and an ``nn.Linear``
        ``classifier``, and should reject name parts it does not support with
        :class:`UserInputError`.
    """
    if not re.fullmatch(r"[a-z]+(?:1d)?", family):
        raise ValueError(
            f"invalid model family {family!r}: use lowercase letters, optionally ending in '1d'"
        )

    def decorator(builder: Builder) -> Builder:
        if family in _FAMILIES:
            raise ValueError(f"model family {family!r} is already registered")
        _FAMILIES[family] = _Family(builder, tuple(examples) or (family,), spatial_dims)
        return builder

    return decorator


def list_models() -> list[str]:
    """Return example model names of every registered family, in registration order."""
    return [name for family in _FAMILIES.values() for name in family.examples]


def parse_model_name(name: str) -> ModelName:
    """Split ``<family>[<depth>][_bn][_w<width>]`` into its parts.

    Raises
    ------
    UserInputError
        If the name does not follow the pattern or its family is not registered.
    """
    match = _NAME_PATTERN.match(name)
    if match is None or match["family"] not in _FAMILIES:
        examples = ", ".join(family.examples[0] for family in _FAMILIES.values())
        raise UserInputError(
            f"unknown model {name!r}: expected <family>[<depth>][_bn][_w<width>] with family "
            f"one of {', '.join(sorted(_FAMILIES))}, for example {examples}"
        )
    width = None if match["width"] is None else int(match["width"])
    if width == 0:
        raise UserInputError(f"invalid model {name!r}: width _w0 must be at least 1")
    depth = None if match["depth"] is None else int(match["depth"])
    return ModelName(name, match["family"], depth, match["batch_norm"] is not None, width)


def build_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    bn_init: str = "ones",
    bn_init_std: float = 0.1,
    position_encoding: str = "none",
    pe_amplitude: float = 0.1,
    pe_period: float = 1.0,
) -> nn.Module:
    """Build a registered model for one input shape and class count.

    Parameters
    ----------
    name : str
        Model name ``<family>[<depth>][_bn][_w<width>]``, such as one from :func:`list_models`.
    input_shape : tuple of int
        Shape of one example without the batch dimension: ``(channels, height, width)`` for
        image families, ``(channels, length)`` for 1-D families, anything for ``mlp``.
    num_classes : int
        Number of outputs of the classifier.
    bn_init : {"ones", "uniform", "gaussian"}, default "ones"
        BatchNorm weight initialisation: all ones (PyTorch's default), U(0, 1), or
        N(0, ``bn_init_std``). BatchNorm biases are always 0.
    bn_init_std : float, default 0.1
        Standard deviation of the ``gaussian`` BatchNorm initialisation; must be positive.
    position_encoding : {"none", "multiplicative", "additive"}, default "none"
        FedPAN encoding applied before every hidden activation; see :class:`PositionEncoding`.
    pe_amplitude : float, default 0.1
        Amplitude A of the position encoding.
    pe_period : float, default 1.0
        Number of periods T of the position encoding across a layer's channels.

    Returns
    -------
    nn.Module
        A :class:`FeatureClassifier` (or another module with ``features`` and ``classifier``
        for families registered outside this module), in training mode.

    Raises
    ------
    UserInputError
        If the name, shape, class count or any option is invalid, or the family does not accept
        this input shape.
    """
    parsed = parse_model_name(name)
    family = _FAMILIES[parsed.family]
    shape = _check_input_shape(name, input_shape, family.spatial_dims)
    _check_options(num_classes, bn_init, bn_init_std)
    encoding = _encoding_config(position_encoding, pe_amplitude, pe_period)

    model = family.builder(ModelSpec(parsed, shape, num_classes, encoding))
    _check_contract(name, model)
    _init_batch_norm(model, bn_init, bn_init_std, name=name)
    logger.debug(
        "Built model %s for input %s: %d parameters",
        name, shape, sum(p.numel() for p in model.parameters()),
    )
    return model


def _check_input_shape(
    name: str, input_shape: Sequence[int], spatial_dims: int | None
) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(size, int) and size >= 1 for size in shape):
        raise UserInputError(
            f"invalid input_shape {shape!r} for model {name!r}: expected positive integers"
        )
    if spatial_dims is None or len(shape) == spatial_dims + 1:
        return shape

    expected = "(channels, height, width)" if spatial_dims == 2 else "(channels, length)"
    # One example name per family that accepts this input shape.
    others = [f.examples[0] for f in _FAMILIES.values() if f.spatial_dims in (None, len(shape) - 1)]
    raise UserInputError(
        f"invalid input_shape {shape} for model {name!r}: expected {expected}. "
        f"For this input shape use a model such as {', '.join(others)}"
    )


def _check_options(num_classes: int, bn_init: str, bn_init_std: float) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(
            f"invalid num_classes {num_classes!r}: expected an integer of at least 1"
        )
    if bn_init not in BN_INITS:
        raise UserInputError(f"invalid bn_init {bn_init!r}: expected one of {', '.join(BN_INITS)}")
    if not (math.isfinite(bn_init_std) and bn_init_std > 0):
        raise UserInputError(
            f"invalid bn_init_std {bn_init_std!r}: expected a positive finite number"
        )


def _encoding_config(mode: str, amplitude: float, period: float) -> PositionEncodingConfig:
    if mode not in POSITION_ENCODINGS:
        raise UserInputError(
            f"invalid position_encoding {mode!r}: expected one of {', '.join(POSITION_ENCODINGS)}"
        )
    for key, value in (("pe_amplitude", amplitude), ("pe_period", period)):
        if not math.isfinite(value):
            raise UserInputError(f"invalid {key} {value!r}: expected a finite number")
    return PositionEncodingConfig(mode, float(amplitude), float(period))


def _check_contract(name: str, model: nn.Module) -> None:
    # A builder registered outside this module may break the features/classifier split.
    if not isinstance(getattr(model, "features", None), nn.Module):
        raise TypeError(f"builder of model {name!r} returned a module without 'features'")
    if not isinstance(getattr(model, "classifier", None), nn.Linear):
        raise TypeError(f"builder of model {name!r} returned a 'classifier' that is not nn.Linear")


def _init_batch_norm(model: nn.Module, bn_init: str, std: float, *, name: str) -> None:
    layers = [
        module for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine
    ]
    if not layers:
        if bn_init != "ones":
            logger.warning(
                "bn_init=%s has no effect: model %s has no BatchNorm layers", bn_init, name
            )
        return

    with torch.no_grad():
        for layer in layers:
            if bn_init == "ones":
                layer.weight.fill_(1.0)
            elif bn_init == "uniform":
                layer.weight.uniform_(0.0, 1.0)
            else:
                layer.weight.normal_(0.0, std)
            layer.bias.zero_()


# ---------------------------------------------------------------------------------------------
# Shared layers
# ---------------------------------------------------------------------------------------------


class PositionEncoding(nn.Module):
    """Fixed per-channel position encoding of FedPAN (position-aware neurons).

    Channel j of J gets p_j = A·sin(2π·T·j/J), j = 0 … J−1. The ``multiplicative`` mode
    returns x·(1 + p_j) and the ``additive`` mode returns x + p_j, with channels on dim 1. The
    encoding is a non-persistent buffer: it has no parameters, follows ``.to(device)`` and stays
    out of ``state_dict``, so aggregation never touches it.

    Parameters
    ----------
    num_channels : int
        Number of channels J of the layer output.
    mode : {"multiplicative", "additive"}
        How the encoding is applied.
    amplitude : float
        Amplitude A.
    period : float
        Number of sine periods T across the channels.
    """

    encoding: torch.Tensor

    def __init__(self, num_channels: int, *, mode: str, amplitude: float, period: float) -> None:
        super().__init__()
        if mode not in ("multiplicative", "additive"):
            raise UserInputError(
                f"invalid position encoding mode {mode!r}: expected multiplicative or additive"
            )
        self.mode = mode
        self.amplitude = amplitude
        self.period = period
        index = torch.arange(num_channels, dtype=torch.float64)
        encoding = amplitude * torch.sin(2 * math.pi * period * index / num_channels)
        self.register_buffer("encoding", encoding.to(torch.get_default_dtype()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the encoding to ``x`` of shape (batch, channels, ...)."""
        encoding = self.encoding.view(1, -1, *([1] * (x.dim() - 2)))
        if self.mode == "multiplicative":
            return x * (1 + encoding)
        return x + encoding

    def extra_repr(self) -> str:
        return (
            f"{self.encoding.numel()}, mode={self.mode}, "
            f"amplitude={self.amplitude}, period={self.period}"
        )


class FeatureClassifier(nn.Module):
    """Feature extractor followed by a linear classifier, ``classifier(features(x))``.

    Parameters
    ----------
    features : nn.Module
        Maps a batch of inputs to a (batch, dim) representation.
    classifier : nn.Linear
        Maps the representation to class logits.
    """

    def __init__(self, features: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape (batch, num_classes)."""
        return self.classifier(self.features(x))


def _activation(channels: int, encoding: PositionEncodingConfig) -> nn.Module:
    """ReLU, preceded by the position encoding when it is enabled."""
    if not encoding.enabled:
        return nn.ReLU()
    position = PositionEncoding(
        channels, mode=encoding.mode, amplitude=encoding.amplitude, period=encoding.period
    )
    return nn.Sequential(OrderedDict(encoding=position, relu=nn.ReLU()))


def _conv_unit(
    in_channels: int,
    out_channels: int,
    *,
    spatial_dims: int,
    kernel_size: int,
    padding: int,
    batch_norm: bool,
    encoding: PositionEncodingConfig,
    stride: int = 1,
) -> nn.Sequential:
    """Conv, optional BatchNorm (then the conv has no bias), optional encoding, ReLU."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv"] = _CONV[spatial_dims](
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=not batch_norm
    )
    if batch_norm:
        layers["bn"] = _BATCH_NORM[spatial_dims](out_channels)
    layers["act"] = _activation(out_channels, encoding)
    return nn.Sequential(layers)


def _linear_unit(
    in_features: int, out_features: int, *, batch_norm: bool, encoding: PositionEncodingConfig
) -> nn.Sequential:
    """Linear, optional BatchNorm (then the linear layer has no bias), optional encoding, ReLU."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["linear"] = nn.Linear(in_features, out_features, bias=not batch_norm)
    if batch_norm:
        layers["bn"] = nn.BatchNorm1d(out_features)
    layers["act"] = _activation(out_features, encoding)
    return nn.Sequential(layers)


def _output_size(layers: OrderedDict[str, nn.Module], input_shape: tuple[int, ...]) -> int:
    """Flat output size of ``layers`` found by a dry run on one zero input."""
    probe = nn.Sequential(layers)
    # Eval mode: BatchNorm accepts a batch of one and its running statistics stay untouched.
    probe.eval()
    with torch.no_grad():
        output = probe(torch.zeros(1, *input_shape))
    probe.train()
    return output[0].numel()


def _maybe_pool(layers: OrderedDict[str, nn.Module], key: str, size: int, spatial_dims: int) -> int:
    """Add a 2× max-pool unless the smallest spatial size is already 1, and return the new size."""
    if size < 2:
        return size
    layers[key] = _MAX_POOL[spatial_dims](2)
    return size // 2


# ---------------------------------------------------------------------------------------------
# Name-part checks shared by the builders
# ---------------------------------------------------------------------------------------------


def _depth(
    name: ModelName, *, allowed: Sequence[int] | None, default: int | None, rule: str
) -> int:
    """Check the depth of the name (or the default) against ``allowed`` and return it."""
    depth = name.depth if name.depth is not None else default
    if depth is None or (allowed is not None and depth not in allowed):
        found = "no depth" if name.depth is None else f"depth {name.depth}"
        raise UserInputError(
            f"invalid model {name.name!r}: {name.family} needs {rule}, found {found}"
        )
    return depth


def _no_part(name: ModelName, part: str, reason: str) -> None:
    present = {
        "depth": name.depth is not None, "_bn": name.batch_norm, "_w": name.width is not None
    }
    if present[part]:
        raise UserInputError(f"invalid model {name.name!r}: {reason}")


def _scaled(channels: int, width: int, default_width: int) -> int:
    return max(1, channels * width // default_width)


# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------


@register_model("mlp", examples=("mlp", "mlp_bn"), spatial_dims=None)
def _build_mlp(spec: ModelSpec) -> nn.Module:
    """Build an MLP on the flattened input: depth counts linear layers (default 3), width is 200.

    ``mlp1`` is a linear softmax classifier whose ``features`` only flattens the input.
    First block: the first hidden linear layer and its BatchNorm.
    """
    name = spec.name
    depth = _depth(
        name, allowed=None, default=3, rule="at least 1 linear layer (such as mlp or mlp3)"
    )
    if depth < 1:
        raise UserInputError(f"invalid model {name.name!r}: an MLP needs at least 1 linear layer")
    if depth == 1:
        _no_part(name, "_bn", "mlp1 has no hidden layer to put BatchNorm after, so drop '_bn'")
    width = name.width or 200

    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    in_features = math.prod(spec.input_shape)
    for index in range(1, depth):
        layers[f"fc{index}"] = _linear_unit(
            in_features, width, batch_norm=name.batch_norm, encoding=spec.encoding
        )
        in_features = width
    return FeatureClassifier(nn.Sequential(layers), nn.Linear(in_features, spec.num_classes))


@register_model("cnn", examples=("cnn", "cnn_bn"))
def _build_cnn(spec: ModelSpec) -> nn.Module:
    """Build a small conv net: two 3×3 conv layers (w, 2w channels, w = 32 by default), each
    followed by a 2× max-pool, then one hidden linear layer of 4w units.

    First block: the first conv layer and its BatchNorm.
    """
    name = spec.name
    _no_part(name, "depth", "cnn has a fixed depth, so drop the number or use vgg8, vgg11 or vgg16")
    width = name.width or 32
    channels, size = spec.input_shape[0], min(spec.input_shape[1:])
    unit = {
        "spatial_dims": 2, "kernel_size": 3, "padding": 1,
        "batch_norm": name.batch_norm, "encoding": spec.encoding,
    }

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv1"] = _conv_unit(channels, width, **unit)
    size = _maybe_pool(layers, "pool1", size, 2)
    layers["conv2"] = _conv_unit(width, 2 * width, **unit)
    _maybe_pool(layers, "pool2", size, 2)
    layers["flatten"] = nn.Flatten()

    hidden = 4 * width
    flat = _output_size(layers, spec.input_shape)
    layers["fc1"] = _linear_unit(flat, hidden, batch_norm=name.batch_norm, encoding=spec.encoding)
    return FeatureClassifier(nn.Sequential(layers), nn.Linear(hidden, spec.num_classes))


@register_model("lenet", examples=("lenet", "lenet_bn"))
def _build_lenet(spec: ModelSpec) -> nn.Module:
    """Build LeNet-5: conv 6@5×5, pool, conv 16@5×5, pool, linear 120, linear 84, classifier.

    The first conv is padded by 2, which keeps the map size, as is usual for 28×28 MNIST. The
    second conv is padded by 2 too when the pooled map is smaller than 10, so 8×8 digits still
    fit, and pooling is skipped once the map is 1 wide. First block: the first conv layer and its
    BatchNorm.
    """
    name = spec.name
    _no_part(name, "depth", "lenet has a fixed depth, so drop the number")
    _no_part(name, "_w", "lenet has fixed widths, so drop '_w' or use cnn_w<width>")
    channels, size = spec.input_shape[0], min(spec.input_shape[1:])
    unit = {
        "spatial_dims": 2, "kernel_size": 5,
        "batch_norm": name.batch_norm, "encoding": spec.encoding,
    }

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv1"] = _conv_unit(channels, 6, padding=2, **unit)
    size = _maybe_pool(layers, "pool1", size, 2)
    padding = 0 if size >= 10 else 2
    layers["conv2"] = _conv_unit(6, 16, padding=padding, **unit)
    _maybe_pool(layers, "pool2", size + 2 * padding - 4, 2)
    layers["flatten"] = nn.Flatten()

    flat = _output_size(layers, spec.input_shape)
    layers["fc1"] = _linear_unit(flat, 120, batch_norm=name.batch_norm, encoding=spec.encoding)
    layers["fc2"] = _linear_unit(120, 84, batch_norm=name.batch_norm, encoding=spec.encoding)
    return FeatureClassifier(nn.Sequential(layers), nn.Linear(84, spec.num_classes))


# Conv channels per layer at the default width 64; "M" is a 2× max-pool. Each VGG also has two
# hidden linear layers before the classifier, so depth = conv layers + 3.
_VGG_LAYOUTS: dict[int, list[int | str]] = {
    8: [64, "M", 128, "M", 256, "M", 512, "M", 512, "M"],
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


@register_model("vgg", examples=("vgg8", "vgg8_bn", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn"))
def _build_vgg(spec: ModelSpec) -> nn.Module:
    """Build VGG-8/11/16: 3×3 convs, two hidden linear layers of 512·w/64 units, the classifier.

    Pools that would act on a 1-wide map (small inputs such as 8×8) are skipped. ``_w`` sets the
    first conv width (default 64). First block: the first conv layer and its BatchNorm.
    """
    name = spec.name
    depth = _depth(
        name, allowed=sorted(_VGG_LAYOUTS), default=None, rule="depth 8, 11 or 16 (such as vgg11)"
    )
    width = name.width or 64
    channels, size = spec.input_shape[0], min(spec.input_shape[1:])

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    conv_count = pool_count = 0
    for item in _VGG_LAYOUTS[depth]:
        if item == "M":
            if size >= 2:
                pool_count += 1
            size = _maybe_pool(layers, f"pool{pool_count}", size, 2)
            continue
        conv_count += 1
        out_channels = _scaled(int(item), width, 64)
        layers[f"conv{conv_count}"] = _conv_unit(
            channels, out_channels, spatial_dims=2, kernel_size=3, padding=1,
            batch_norm=name.batch_norm, encoding=spec.encoding,
        )
        channels = out_channels
    layers["flatten"] = nn.Flatten()

    hidden = _scaled(512, width, 64)
    flat = _output_size(layers, spec.input_shape)
    layers["fc1"] = _linear_unit(flat, hidden, batch_norm=name.batch_norm, encoding=spec.encoding)
    layers["fc2"] = _linear_unit(hidden, hidden, batch_norm=name.batch_norm, encoding=spec.encoding)
    return FeatureClassifier(nn.Sequential(layers), nn.Linear(hidden, spec.num_classes))


class _ResidualBlock(nn.Module):
    """Basic residual block: two 3×3 convs with BatchNorm, and a 1×1 conv + BatchNorm shortcut
    when the shape changes. The position encoding sits before each ReLU, so the second one
    encodes the sum of the residual branch and the shortcut.

    NOTE: encoding the sum rather than the second BatchNorm output is our choice, because FedPAN
    is described as encoding each layer before its activation without a rule for residual sums.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, spatial_dims: int,
        encoding: PositionEncodingConfig,
    ) -> None:
        super().__init__()
        conv, batch_norm = _CONV[spatial_dims], _BATCH_NORM[spatial_dims]
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = batch_norm(out_channels)
        self.act1 = _activation(out_channels, encoding)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = batch_norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False),
                batch_norm(out_channels),
            )
        self.act2 = _activation(out_channels, encoding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _cifar_resnet(spec: ModelSpec, *, depth: int, spatial_dims: int) -> nn.Module:
    """Build a CIFAR-style ResNet: a 3×3 stem conv, three stages of (depth − 2)/6 blocks with
    w, 2w, 4w channels (strides 1, 2, 2), then global average pooling."""
    width = spec.name.width or 16
    blocks_per_stage = (depth - 2) // 6

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = _conv_unit(
        spec.input_shape[0], width, spatial_dims=spatial_dims, kernel_size=3, padding=1,
        batch_norm=True, encoding=spec.encoding,
    )
    in_channels = width
    stages = ((width, 1), (2 * width, 2), (4 * width, 2))
    for stage, (out_channels, stride) in enumerate(stages, start=1):
        blocks = []
        for index in range(blocks_per_stage):
            blocks.append(_ResidualBlock(
                in_channels, out_channels, stride=stride if index == 0 else 1,
                spatial_dims=spatial_dims, encoding=spec.encoding,
            ))
            in_channels = out_channels
        layers[f"stage{stage}"] = nn.Sequential(*blocks)
    layers["pool"] = _AVG_POOL[spatial_dims](1)
    layers["flatten"] = nn.Flatten()
    return FeatureClassifier(nn.Sequential(layers), nn.Linear(in_channels, spec.num_classes))


def _torchvision_resnet18(spec: ModelSpec) -> nn.Module:
    """Build torchvision's ResNet-18 with the CIFAR stem: a 3×3 stride-1 conv and no max-pool.

    With a position encoding, every block's ReLU (used after its first BatchNorm and after the
    residual sum) and the stem's ReLU are preceded by a :class:`PositionEncoding`, so parameter
    names stay those of torchvision inside each ``layer<k>``.
    """
    _no_part(
        spec.name, "_w",
        "resnet18 has torchvision's fixed widths, so drop '_w' or use resnet20_w<width>",
    )
    net = torchvision.models.resnet18(num_classes=spec.num_classes)
    net.conv1 = nn.Conv2d(spec.input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    # Same initialisation torchvision gives its other convs.
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    if spec.encoding.enabled:
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in stage:
                block.relu = _activation(block.conv1.out_channels, spec.encoding)

    stem = nn.Sequential(
        OrderedDict(conv=net.conv1, bn=net.bn1, act=_activation(64, spec.encoding))
    )
    features = nn.Sequential(OrderedDict(
        stem=stem, layer1=net.layer1, layer2=net.layer2, layer3=net.layer3, layer4=net.layer4,
        pool=net.avgpool, flatten=nn.Flatten(),
    ))
    return FeatureClassifier(features, net.fc)


@register_model("resnet", examples=("resnet20", "resnet20_w32", "resnet32", "resnet18"))
def _build_resnet(spec: ModelSpec) -> nn.Module:
    """Build a ResNet with BatchNorm: depth 18 is torchvision's ResNet-18 with a CIFAR stem, depth
    6n + 2 (20, 32, 44, 56, 110) the CIFAR ResNet whose ``_w`` sets the first-stage width
    (default 16). First block: the stem conv and its BatchNorm, before the first residual stage.
    """
    name = spec.name
    _no_part(name, "_bn", "ResNets always use BatchNorm, so drop '_bn'")
    depth = _depth(
        name, allowed=None, default=None, rule="depth 18 or 6n + 2 (such as resnet18 or resnet20)"
    )
    if depth == 18:
        return _torchvision_resnet18(spec)
    if depth < 8 or (depth - 2) % 6 != 0:
        raise UserInputError(
            f"invalid model {name.name!r}: resnet depth must be 18 or 6n + 2 "
            "(8, 20, 32, 44, 56, 110, ...)"
        )
    return _cifar_resnet(spec, depth=depth, spatial_dims=2)


@register_model("cnn1d", examples=("cnn1d", "cnn1d_bn"), spatial_dims=1)
def _build_cnn1d(spec: ModelSpec) -> nn.Module:
    """Build a 1-D conv net for sequences such as MNIST-1D: three conv layers of kernel 5 with
    w, 2w, 2w channels (w = 32 by default), each followed by a 2× max-pool, then the flattened map.

    First block: the first conv layer and its BatchNorm.
    """
    name = spec.name
    _no_part(name, "depth", "cnn1d has a fixed depth, so drop the number or use resnet1d")
    width = name.width or 32
    channels, size = spec.input_shape
    unit = {
        "spatial_dims": 1, "kernel_size": 5, "padding": 2,
        "batch_norm": name.batch_norm, "encoding": spec.encoding,
    }

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, out_channels in enumerate((width, 2 * width, 2 * width), start=1):
        layers[f"conv{index}"] = _conv_unit(channels, out_channels, **unit)
        size = _maybe_pool(layers, f"pool{index}", size, 1)
        channels = out_channels
    layers["flatten"] = nn.Flatten()

    flat = _output_size(layers, spec.input_shape)
    return FeatureClassifier(nn.Sequential(layers), nn.Linear(flat, spec.num_classes))


@register_model("resnet1d", examples=("resnet1d",), spatial_dims=1)
def _build_resnet1d(spec: ModelSpec) -> nn.Module:
    """Build a CIFAR-style ResNet with 1-D convs, laid out as resnet20, of depth 6n + 2.

    The default depth is 20. First block: the stem conv and its BatchNorm.
    """
    name = spec.name
    _no_part(name, "_bn", "ResNets always use BatchNorm, so drop '_bn'")
    depth = _depth(
        name, allowed=None, default=20, rule="depth 6n + 2 (such as resnet1d or resnet1d8)"
    )
    if depth < 8 or (depth - 2) % 6 != 0:
        raise UserInputError(
            f"invalid model {name.name!r}: resnet1d depth must be 6n + 2 (8, 20, 32, ...)"
        )
    return _cifar_resnet(spec, depth=depth, spatial_dims=1)


# ---------------------------------------------------------------------------------------------
# Parameter groups
# ---------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """Sort the model's parameter names into disjoint groups.

    Parameters
    ----------
    model : nn.Module
        A model; ``model.classifier``, when present, defines the ``classifier`` group.

    Returns
    -------
    dict of str to list of str
        Keys :data:`PARAMETER_GROUPS`, each mapped to names from ``model.named_parameters()``
        in model order. Buffers are never included. Each parameter is in exactly one group:

        - ``classifier``: the classifier's weight and bias;
        - ``bn_weight`` and ``bn_bias``: BatchNorm affine weights and biases;
        - ``conv_weight``: conv kernels;
        - ``other_weight``: other tensors of two or more dimensions, such as linear weights;
        - ``other_bias``: other 1-D tensors, such as conv and linear biases.
    """
    classifier = getattr(model, "classifier", None)
    classifier_ids: set[int] = set()
    if isinstance(classifier, nn.Module):
        classifier_ids = {id(parameter) for parameter in classifier.parameters()}
    owners = {
        id(parameter): module
        for module in model.modules()
        for parameter in module.parameters(recurse=False)
    }

    groups: dict[str, list[str]] = {group: [] for group in PARAMETER_GROUPS}
    for name, parameter in model.named_parameters():
        owner = owners[id(parameter)]
        if id(parameter) in classifier_ids:
            group = "classifier"
        elif isinstance(owner, nn.modules.batchnorm._BatchNorm):
            group = "bn_weight" if parameter is owner.weight else "bn_bias"
        elif isinstance(owner, nn.modules.conv._ConvNd) and parameter is owner.weight:
            group = "conv_weight"
        else:
            group = "other_weight" if parameter.dim() >= 2 else "other_bias"
        groups[group].append(name)
    return groups


def select_parameters(model: nn.Module, group: str) -> list[str]:
    """Return the names of the parameters in a selection, in model order.

    Parameters
    ----------
    model : nn.Module
        A model with ``features`` and ``classifier`` submodules, as :func:`build_model` returns.
    group : str
        One of :data:`SELECTIONS`:

        - ``all``: every parameter;
        - ``classifier``: the classifier's weight and bias;
        - ``features``: everything but the classifier;
        - ``first_block``: the first submodule of ``model.features`` that has parameters. It is
          the first hidden linear layer with its BatchNorm in ``mlp``, the first conv layer with
          its BatchNorm in ``cnn``, ``lenet``, ``vgg`` and ``cnn1d``, and the stem conv with its
          BatchNorm (before the first residual stage) in ``resnet`` and ``resnet1d``;
        - ``conv``: conv kernels, without conv biases;
        - ``bn``: BatchNorm affine weights and biases;
        - ``bn_weight``: BatchNorm affine weights only;
        - ``re:<regex>``: names that the regular expression matches anywhere (``re.search``).

    Raises
    ------
    UserInputError
        If the group is unknown, the regular expression is invalid, or nothing is selected.
    """
    names = [name for name, _ in model.named_parameters()]
    groups = parameter_groups(model)
    if group.startswith("re:"):
        selected = _select_by_pattern(names, group[3:])
    elif group == "all":
        selected = names
    elif group == "classifier":
        selected = groups["classifier"]
    elif group == "features":
        classifier = set(groups["classifier"])
        selected = [name for name in names if name not in classifier]
    elif group == "first_block":
        selected = _first_block(model)
    elif group == "conv":
        selected = groups["conv_weight"]
    elif group == "bn":
        bn = set(groups["bn_weight"]) | set(groups["bn_bias"])
        selected = [name for name in names if name in bn]
    elif group == "bn_weight":
        selected = groups["bn_weight"]
    else:
        raise UserInputError(
            f"unknown parameter group {group!r}: expected one of {', '.join(SELECTIONS)}"
        )

    if not selected:
        raise UserInputError(f"parameter group {group!r} selects no parameters of this model")
    return selected


def _select_by_pattern(names: list[str], pattern: str) -> list[str]:
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise UserInputError(
            f"invalid regular expression {pattern!r} in parameter group 're:{pattern}': {error}"
        ) from error
    return [name for name in names if regex.search(name)]


def _first_block(model: nn.Module) -> list[str]:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise UserInputError(
            "parameter group 'first_block' needs a model with a 'features' submodule"
        )
    for child in features.children():
        child_ids = {id(p) for p in child.parameters()}
        if child_ids:
            return [name for name, p in model.named_parameters() if id(p) in child_ids]
    return []
