"""A reader for dlib's DNN serialization format (the `.dat` files written by `dlib::serialize`).

The file is the C++ network object written recursively: `add_loss_layer` first, then each
wrapper's version number from the outside in, then the input layer, then each layer's details
from the input out. Three things are not in the file because they live in the C++ type:

* tag and skip layers write only the version number 1, so they cannot be told apart and
  their ids (tag1, tag2, ...) are lost; `add_prev`/`mult_prev` layers do not record which tag
  they read either;
* the pyramid type of `input_rgb_image_pyramid` (e.g. `pyramid_down<6>`);
* which of two classes a version-1 wrapper is: dlib's `add_layer` version 1 (pre-2017) is
  indistinguishable from a tag, so only `add_layer` version 2 is read (every released model).
  `repeat<>` layers are not supported either.

`parse_dnn` therefore returns unresolved `Marker`s and untagged `Merge`s; `apply_structure`
fills them in from a token list transcribed from the network's C++ definition (see
`resnet_v1_structure`), checking every layer's kind on the way, as dlib itself does when it
deserializes into a declared type.

Encodings (dlib/serialize.h): integers are a control byte (bit 7 = negative, low 4 bits = the
number of little-endian magnitude bytes that follow); floats are two such integers, mantissa
then exponent (value = mantissa * 2**exponent, exponents 32000..32002 mean inf, -inf, nan);
bools are the ASCII bytes '1'/'0'; strings are a length then raw bytes; tensors (version 2)
are n, k, nr, nc then raw little-endian float32 in NCHW order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from yingyan.errors import ModelError

Array = npt.NDArray[np.float32]
Shape4 = tuple[int, int, int, int]

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002
_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_<>]{2,63}")


class DlibFormatError(ModelError):
    """The file is not a dlib DNN of a supported layout, or is damaged."""


# ---------------------------------------------------------------------------------------------
# Typed representation


@dataclass(frozen=True, slots=True, eq=False)
class Conv:
    """`con_`: cross-correlation, weights (filters, channels, kh, kw), NCHW."""

    num_filters: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    weights: Array
    bias: Array

    @property
    def kind(self) -> str:
        return "con"


@dataclass(frozen=True, slots=True, eq=False)
class Fc:
    """`fc_`: output = flatten(x) @ weights (+ bias); weights are (num_inputs, num_outputs)."""

    num_outputs: int
    num_inputs: int
    weights: Array
    bias: Array | None

    @property
    def kind(self) -> str:
        return "fc"


@dataclass(frozen=True, slots=True, eq=False)
class Affine:
    """`affine_`: y = x * gamma + beta, per channel (conv mode) or per element (fc mode).
    Trained nets swap batch norm for this layer, with the running statistics folded in."""

    mode: Literal["conv", "fc"]
    gamma: Array
    beta: Array

    @property
    def kind(self) -> str:
        return "affine"


@dataclass(frozen=True, slots=True, eq=False)
class BatchNorm:
    """`bn_con`/`bn_fc` as saved after training; inference uses the running statistics."""

    mode: Literal["conv", "fc"]
    gamma: Array
    beta: Array
    running_mean: Array
    running_variance: Array
    eps: float

    @property
    def kind(self) -> str:
        return "bn"

    def as_affine(self) -> Affine:
        """The affine layer dlib builds from this one (affine_'s bn_ constructor), in float32."""
        eps = np.float32(self.eps)
        gamma = (self.gamma / np.sqrt(self.running_variance + eps)).astype(np.float32)
        beta = (self.beta - gamma * self.running_mean).astype(np.float32)
        return Affine(self.mode, gamma, beta)


@dataclass(frozen=True, slots=True)
class Activation:
    function: Literal["relu", "sig", "htan"]

    @property
    def kind(self) -> str:
        return self.function


@dataclass(frozen=True, slots=True)
class Pool:
    """`max_pool_`/`avg_pool_`. A kernel of (0, 0) pools the whole input (`*_everything`)."""

    op: Literal["max", "avg"]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def kind(self) -> str:
        return f"{self.op}_pool"

    @property
    def is_global(self) -> bool:
        return self.kernel == (0, 0)


@dataclass(frozen=True, slots=True)
class Merge:
    """`add_prev_`/`mult_prev_`: combine the input with the nearest tag `tag` below. Shapes may
    differ: dlib zero-pads both operands at the end of every axis to the larger size."""

    op: Literal["add", "mul"]
    tag: int | None = None

    @property
    def kind(self) -> str:
        return f"{self.op}_prev" if self.op == "add" else "mult_prev"


@dataclass(frozen=True, slots=True)
class Multiply:
    value: float

    @property
    def kind(self) -> str:
        return "multiply"


@dataclass(frozen=True, slots=True)
class Dropout:
    rate: float

    @property
    def kind(self) -> str:
        return "dropout"


@dataclass(frozen=True, slots=True)
class Marker:
    """A version-1 wrapper: a tag or a skip, not yet known which (see module docstring)."""

    @property
    def kind(self) -> str:
        return "tag_or_skip"


@dataclass(frozen=True, slots=True)
class Tag:
    """Remembers its input under `id`; passes it through unchanged."""

    id: int

    @property
    def kind(self) -> str:
        return "tag"


@dataclass(frozen=True, slots=True)
class Skip:
    """Discards its input and outputs the nearest tag `id` below instead."""

    id: int

    @property
    def kind(self) -> str:
        return "skip"


Layer = (
    Conv
    | Fc
    | Affine
    | BatchNorm
    | Activation
    | Pool
    | Merge
    | Multiply
    | Dropout
    | Marker
    | Tag
    | Skip
)


@dataclass(frozen=True, slots=True)
class InputLayer:
    """RGB input layers: pixel -> (pixel - mean) / 256 per channel, to NCHW float32.

    `size` is (rows, cols) for `input_rgb_image_sized`. For `input_rgb_image_pyramid` the
    padding fields are those of dlib's tiled pyramid (the file's pyramid type is not stored;
    dlib's MMOD face detector uses `pyramid_down<6>`); files from before they were stored
    get dlib's defaults, 10 and 11."""

    kind: Literal["rgb_image", "rgb_image_sized", "rgb_image_pyramid"]
    mean_rgb: tuple[float, float, float]
    size: tuple[int, int] | None = None
    pyramid_padding: int | None = None
    pyramid_outer_padding: int | None = None


@dataclass(frozen=True, slots=True)
class LossMetric:
    """`loss_metric_`: the output is the descriptor itself; two faces match when their
    Euclidean distance is below `distance_threshold`."""

    margin: float
    distance_threshold: float


@dataclass(frozen=True, slots=True)
class DetectorWindow:
    width: int
    height: int
    label: str = ""


@dataclass(frozen=True, slots=True)
class BoxOverlap:
    """dlib's test_box_overlap: two boxes overlap if IoU > match or either is covered by more
    than `overlap` of its own area."""

    match: float
    overlap: float


@dataclass(frozen=True, slots=True)
class MMODOptions:
    detector_windows: tuple[DetectorWindow, ...]
    loss_per_false_alarm: float
    loss_per_missed_target: float
    truth_match_iou_threshold: float
    overlaps_nms: BoxOverlap
    overlaps_ignore: BoxOverlap
    assume_image_pyramid: bool
    use_bounding_box_regression: bool
    bbr_lambda: float
    version: int


@dataclass(frozen=True, slots=True)
class LossMMOD:
    """`loss_mmod_`: one output channel per detector window (x5 with box regression)."""

    options: MMODOptions


Loss = LossMetric | LossMMOD


@dataclass(frozen=True, slots=True, eq=False)
class DlibNet:
    loss: Loss
    input: InputLayer
    layers: tuple[Layer, ...]  # input side first

    def count(self, kind: str) -> int:
        return sum(1 for layer in self.layers if layer.kind == kind)


# ---------------------------------------------------------------------------------------------
# Primitive decoding


class _Reader:
    """A cursor over the file's bytes with dlib's primitive decoders."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"dlib DNN file: {what} (at byte {self.pos})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("unexpected end of file")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def unsigned(self) -> int:
        value = self.integer()
        if value < 0:
            raise self.fail("negative value for an unsigned field")
        return value

    def real(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("old ASCII float encoding is not supported")
        mantissa, exponent = self.integer(), self.integer()
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent == _FLOAT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def boolean(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {byte!r}")
        return byte == b"1"

    def string(self) -> str:
        return self.take(self.unsigned()).decode("latin-1")

    def peek_identifier(self) -> str | None:
        """The next string if it looks like a layer or input name; the cursor does not move."""
        start = self.pos
        try:
            n = self.unsigned()
            raw = self.take(n)
        except DlibFormatError:
            return None
        finally:
            self.pos = start
        return raw.decode("ascii") if _IDENTIFIER.fullmatch(raw) else None

    def tensor(self) -> Array:
        version = self.integer()
        if version != 2:
            raise self.fail(f"unsupported tensor version {version}")
        shape = tuple(self.unsigned() for _ in range(4))
        count = math.prod(shape)
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> Shape4:
        version = self.integer()
        if version != 1:
            raise self.fail(f"unsupported alias_tensor version {version}")
        n, k, nr, nc = (self.unsigned() for _ in range(4))
        return n, k, nr, nc

    def expect(self, value: int, what: str) -> None:
        got = self.integer()
        if got != value:
            raise self.fail(f"{what}: expected version {value}, found {got}")


def _split(params: Array, *shapes: Shape4) -> list[Array]:
    """Cut a layer's flat parameter tensor into the alias tensors dlib views it through."""
    flat = params.reshape(-1)
    sizes = [math.prod(s) for s in shapes]
    if sum(sizes) != flat.size:
        raise DlibFormatError(f"parameter size {flat.size} does not match views {shapes}")
    out, offset = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return out


def _mode(value: int) -> Literal["conv", "fc"]:
    if value not in (0, 1):
        raise DlibFormatError(f"unknown layer_mode {value}")
    return "conv" if value == 0 else "fc"


# ---------------------------------------------------------------------------------------------
# Layer details (dlib/dnn/layers.h)


def _read_con(r: _Reader) -> Conv:
    params = r.tensor()
    num_filters = r.integer()
    kernel = (r.integer(), r.integer())
    stride = (r.integer(), r.integer())
    padding = (r.integer(), r.integer())
    filters, biases = r.alias_tensor(), r.alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.real()
    weights, bias = _split(params, filters, biases)
    if filters[0] != num_filters or filters[2:] != kernel:
        raise r.fail(f"con_ filters {filters} disagree with its hyper-parameters")
    return Conv(num_filters, kernel, stride, padding, weights, bias.reshape(-1))


def _read_fc(r: _Reader) -> Fc:
    num_outputs, num_inputs = r.unsigned(), r.unsigned()
    params = r.tensor()
    w_view, b_view = r.alias_tensor(), r.alias_tensor()
    has_bias = r.integer() == 0  # fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    for _ in range(4):
        r.real()
    if has_bias:
        weights, bias = _split(params, w_view, b_view)
        return Fc(num_outputs, num_inputs, weights.reshape(num_inputs, num_outputs), bias.ravel())
    (weights,) = _split(params, w_view)
    return Fc(num_outputs, num_inputs, weights.reshape(num_inputs, num_outputs), None)


def _read_affine(r: _Reader) -> Affine:
    params = r.tensor()
    g_view, b_view = r.alias_tensor(), r.alias_tensor()
    mode = _mode(r.integer())
    gamma, beta = _split(params, g_view, b_view)
    return Affine(mode, _squeeze(gamma, mode), _squeeze(beta, mode))


def _squeeze(a: Array, mode: Literal["conv", "fc"]) -> Array:
    """Per-channel vectors for conv mode; (k, nr, nc) blocks for fc mode."""
    return a.reshape(-1) if mode == "conv" else a.reshape(a.shape[1:])


def _read_bn(mode: Literal["conv", "fc"]) -> Callable[[_Reader], BatchNorm]:
    def read(r: _Reader) -> BatchNorm:
        params = r.tensor()
        g_view, b_view = r.alias_tensor(), r.alias_tensor()
        r.tensor(), r.tensor()  # batch means and inverse std-devs from the last training step
        running_mean, running_var = r.tensor(), r.tensor()
        r.unsigned(), r.unsigned()  # num_updates, running_stats_window_size
        for _ in range(4):
            r.real()
        eps = r.real()
        gamma, beta = _split(params, g_view, b_view)
        return BatchNorm(
            mode,
            _squeeze(gamma, mode),
            _squeeze(beta, mode),
            _squeeze(running_mean, mode),
            _squeeze(running_var, mode),
            eps,
        )

    return read


def _read_pool(op: Literal["max", "avg"]) -> Callable[[_Reader], Pool]:
    def read(r: _Reader) -> Pool:
        kernel = (r.integer(), r.integer())
        stride = (r.integer(), r.integer())
        padding = (r.integer(), r.integer())
        return Pool(op, kernel, stride, padding)

    return read


def _read_dropout(r: _Reader) -> Dropout:
    rate = r.real()
    r.tensor()  # the last mask
    return Dropout(rate)


_LAYER_READERS: dict[str, Callable[[_Reader], Layer]] = {
    "con_4": _read_con,
    "fc_2": _read_fc,
    "affine_": _read_affine,
    "bn_con2": _read_bn("conv"),
    "bn_fc2": _read_bn("fc"),
    "relu_": lambda r: Activation("relu"),
    "sig_": lambda r: Activation("sig"),
    "htan_": lambda r: Activation("htan"),
    "max_pool_2": _read_pool("max"),
    "avg_pool_2": _read_pool("avg"),
    "add_prev_": lambda r: Merge("add"),
    "mult_prev_": lambda r: Merge("mul"),
    "multiply_": lambda r: Multiply(r.real()),
    "dropout_": _read_dropout,
}


def _read_layer_details(r: _Reader) -> Layer:
    name = r.string()
    reader = _LAYER_READERS.get(name)
    if reader is None:
        raise r.fail(f"unsupported layer {name!r}")
    return reader(r)


# ---------------------------------------------------------------------------------------------
# Input and loss layers (dlib/dnn/input.h, dlib/dnn/loss.h)


def _read_input(r: _Reader) -> InputLayer:
    name = r.string()
    if name not in _INPUTS:
        raise r.fail(f"unsupported input layer {name!r}")
    mean = (r.real(), r.real(), r.real())
    if name == "input_rgb_image":
        return InputLayer("rgb_image", mean)
    if name == "input_rgb_image_sized":
        return InputLayer("rgb_image_sized", mean, size=(r.unsigned(), r.unsigned()))
    padding, outer = (r.unsigned(), r.unsigned()) if name.endswith("2") else (10, 11)
    return InputLayer("rgb_image_pyramid", mean, None, padding, outer)


_INPUTS = (
    "input_rgb_image",
    "input_rgb_image_sized",
    "input_rgb_image_pyramid",
    "input_rgb_image_pyramid2",
)


def _read_loss(r: _Reader) -> Loss:
    name = r.string()
    if name == "loss_metric_":  # dlib hard-coded these before they were serialized
        return LossMetric(0.1, 0.75)
    if name == "loss_metric_2":
        return LossMetric(r.real(), r.real())
    if name == "loss_mmod_":
        return LossMMOD(_read_mmod_options(r))
    raise r.fail(f"unsupported loss layer {name!r}")


def _read_mmod_options(r: _Reader) -> MMODOptions:
    version = r.integer()
    if not 1 <= version <= 4:
        raise r.fail(f"unsupported mmod_options version {version}")
    if version == 1:
        windows: tuple[DetectorWindow, ...] = (DetectorWindow(r.unsigned(), r.unsigned()),)
    else:
        windows = tuple(_read_detector_window(r) for _ in range(r.unsigned()))
    false_alarm, missed, iou = r.real(), r.real(), r.real()
    nms = BoxOverlap(r.real(), r.real())
    ignore = BoxOverlap(r.real(), r.real())
    pyramid = r.take(1)[0] != 0 if version >= 3 else True  # a raw uint8 enum: no, yes
    bbr, bbr_lambda = (r.boolean(), r.real()) if version >= 4 else (False, 100.0)
    return MMODOptions(
        windows, false_alarm, missed, iou, nms, ignore, pyramid, bbr, bbr_lambda, version
    )


def _read_detector_window(r: _Reader) -> DetectorWindow:
    version = r.integer()
    if version not in (1, 2):
        raise r.fail(f"unsupported detector_window_details version {version}")
    width, height = r.unsigned(), r.unsigned()
    return DetectorWindow(width, height, r.string() if version == 2 else "")


# ---------------------------------------------------------------------------------------------
# Network structure (dlib/dnn/core.h)


def _read_add_layer_state(r: _Reader, version: int) -> None:
    """What add_layer writes after its details: training flags and scratch tensors."""
    if version != 2:
        raise r.fail(f"unsupported add_layer version {version}")
    r.boolean(), r.boolean(), r.boolean()
    r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, params_grad


def _read_bottom(r: _Reader, version: int) -> tuple[InputLayer, Layer]:
    """The innermost wrapper, which holds the input layer itself and has its own layout."""
    input_layer = _read_input(r)
    if version in (2, 3) and r.peek_identifier() is not None:  # add_layer<DETAILS, INPUT>
        layer = _read_layer_details(r)
        r.boolean(), r.boolean(), r.boolean()
        r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, grad_final
        if version == 3:
            r.unsigned()  # sample expansion factor
        return input_layer, layer
    if version in (1, 2):  # add_tag_layer<ID, INPUT>
        r.tensor(), r.tensor()
        r.boolean()
        if version == 2:
            r.unsigned()
        return input_layer, Marker()
    raise r.fail(f"unsupported wrapper version {version} around the input layer")


def parse_dnn_bytes(data: bytes) -> DlibNet:
    """Parse a whole serialized `add_loss_layer` network; every byte must be accounted for."""
    r = _Reader(data)
    r.expect(1, "add_loss_layer")
    loss = _read_loss(r)
    versions = [r.integer()]
    while r.peek_identifier() not in _INPUTS:
        versions.append(r.integer())
        if len(versions) > 100_000:
            raise r.fail("no input layer found")
    input_layer, bottom = _read_bottom(r, versions.pop())
    layers: list[Layer] = [bottom]
    for version in reversed(versions):
        if version == 1:
            layers.append(Marker())
            continue
        layers.append(_read_layer_details(r))
        _read_add_layer_state(r, version)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing bytes")
    return DlibNet(loss, input_layer, tuple(layers))


def parse_dnn(path: Path | str) -> DlibNet:
    """Parse a dlib DNN `.dat` file (tags, skips and merge targets left unresolved)."""
    return parse_dnn_bytes(Path(path).read_bytes())


# ---------------------------------------------------------------------------------------------
# Resolving what the file does not record

_ID_TOKEN = re.compile(r"(tag|skip|add_prev|mult_prev)(\d+)")


def apply_structure(net: DlibNet, tokens: Sequence[str]) -> DlibNet:
    """Check every layer against the C++ definition (one token per layer, input side first,
    e.g. "con", "affine", "tag1", "skip1", "add_prev2") and fill in tag ids."""
    if len(tokens) != len(net.layers):
        raise DlibFormatError(f"structure has {len(tokens)} layers, the file {len(net.layers)}")
    layers = [
        _resolve(layer, token, i)
        for i, (layer, token) in enumerate(zip(net.layers, tokens, strict=True))
    ]
    return replace(net, layers=tuple(layers))


def _resolve(layer: Layer, token: str, index: int) -> Layer:
    m = _ID_TOKEN.fullmatch(token)
    kind, ident = (m.group(1), int(m.group(2))) if m else (token, None)
    if isinstance(layer, Marker) and ident is not None and kind in ("tag", "skip"):
        return Tag(ident) if kind == "tag" else Skip(ident)
    if isinstance(layer, Merge) and ident is not None and kind == layer.kind:
        return replace(layer, tag=ident)
    if ident is None and kind == layer.kind:
        return layer
    raise DlibFormatError(f"layer {index}: the file has {layer.kind!r}, the structure {token!r}")


def resnet_v1_structure() -> list[str]:
    """Layer tokens of dlib's face recognition ResNet (`anet_type` in
    examples/dnn_face_recognition_ex.cpp), input side first."""

    block = ["con", "affine", "relu", "con", "affine"]  # the first con has stride 2 in ares_down
    ares = ["tag1", *block, "add_prev1", "relu"]
    ares_down = ["tag1", *block, "tag2", "skip1", "avg_pool", "add_prev2", "relu"]
    tokens = ["con", "affine", "relu", "max_pool"]
    tokens += ares * 3  # alevel4: 32 filters
    tokens += ares_down + ares * 3  # alevel3: 64
    tokens += ares_down + ares * 2  # alevel2: 128
    tokens += ares_down + ares * 2  # alevel1: 256
    tokens += ares_down  # alevel0: 256
    return [*tokens, "avg_pool", "fc"]


def load_resnet_v1(path: Path | str) -> DlibNet:
    """dlib_face_recognition_resnet_model_v1.dat, parsed and resolved."""
    return apply_structure(parse_dnn(path), resnet_v1_structure())
