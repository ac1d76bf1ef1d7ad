"""dlib's ResNet face recognizer as an ONNX graph, so it runs on onnxruntime without dlib.

Graph contract: input `chips`, uint8 (or float32 holding 0..255 values) RGB, NHWC, shape
(N, 150, 150, 3), exactly what `dlib.get_face_chip(size=150)` returns, stacked; output
`descriptors`, float32 (N, 128): dlib's raw descriptors, not unit-normalised.

Folding, all exact or within float rounding (the tests hold the result to dlib's within 1e-4):
* dlib's input layer computes (pixel - mean) / 256. The mean subtraction stays a Sub (cheap,
  and folding it into the first conv's bias would trade exactness for a cancellation); the
  1/256 goes into the first conv's weights, which is bit-exact because it is a power of two.
* each `affine_` (batch norm with frozen statistics) that directly follows a conv is folded
  into that conv's weights and bias; any other affine becomes a per-channel Mul and Add.
* `add_prev` between tensors of different shapes (dlib zero-pads the smaller one at the end
  of each axis, which the ResNet relies on where a stride-2 branch meets its pooled shortcut)
  becomes Pad + Add with the pads computed here, since the input size is fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from yingyan.models import file_sha256
from yingyan.privacy.files import atomic_write
from yingyan.runtime.dlib_format import (
    Activation,
    Affine,
    BatchNorm,
    DlibFormatError,
    DlibNet,
    Fc,
    Layer,
    LossMetric,
    Merge,
    Multiply,
    Pool,
    Skip,
    Tag,
    load_resnet_v1,
)
from yingyan.runtime.dlib_format import Conv as DlibConv

OPSET = 17
CONVERTER_VERSION = 1  # bump when the graph changes, so cached files are rebuilt
INPUT_NAME = "chips"
OUTPUT_NAME = "descriptors"
InputDtype = Literal["uint8", "float32"]
Shape = tuple[int, ...]  # without the batch axis


@dataclass(frozen=True, slots=True)
class _Value:
    name: str
    shape: Shape


@dataclass
class GraphBuilder:
    """Nodes and initializers under construction, with unique names (shared by the converters)."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    counter: int = 0

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, hint: str, array: npt.NDArray[np.generic]) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


# ---------------------------------------------------------------------------------------------
# Folding


def fold_layers(layers: tuple[Layer, ...], *, fold_affine: bool = True) -> list[Layer]:
    """Batch norms become affines (dlib's own conversion); with `fold_affine`, each conv-mode
    affine right after a conv is folded into it. Tags between them block folding, correctly:
    a tag would need the unscaled conv output."""
    out: list[Layer] = []
    for layer in layers:
        if isinstance(layer, BatchNorm):
            layer = layer.as_affine()
        prev = out[-1] if out else None
        if fold_affine and isinstance(prev, DlibConv) and _is_conv_affine(layer):
            out[-1] = _fold_affine(prev, layer)
            continue
        out.append(layer)
    return out


def _is_conv_affine(layer: Layer) -> TypeGuard[Affine]:
    return isinstance(layer, Affine) and layer.mode == "conv"


def _fold_affine(conv: DlibConv, affine: Affine) -> DlibConv:
    g = affine.gamma.astype(np.float64)
    weights = conv.weights.astype(np.float64) * g[:, None, None, None]
    bias = conv.bias.astype(np.float64) * g + affine.beta
    return replace(conv, weights=weights.astype(np.float32), bias=bias.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Emitting layers


def _conv(g: GraphBuilder, x: _Value, layer: DlibConv, scale: float = 1.0) -> _Value:
    if x.shape[0] != layer.weights.shape[1]:
        raise DlibFormatError(f"conv expects {layer.weights.shape[1]} channels, got {x.shape}")
    w = g.const("W", (layer.weights * np.float32(scale)).astype(np.float32))
    b = g.const("B", layer.bias.astype(np.float32))
    (py, px), (sy, sx), (kh, kw) = layer.padding, layer.stride, layer.kernel
    pads = [py, px, py, px]
    name = g.op("Conv", [x.name, w, b], "conv", kernel_shape=[kh, kw], strides=[sy, sx], pads=pads)
    h = 1 + (x.shape[1] + 2 * py - kh) // sy
    w_out = 1 + (x.shape[2] + 2 * px - kw) // sx
    return _Value(name, (layer.num_filters, h, w_out))


def _affine(g: GraphBuilder, x: _Value, layer: Affine) -> _Value:
    if layer.mode == "conv":
        view: Shape = (1, layer.gamma.size) + (1,) * (len(x.shape) - 1)
    else:
        view = (1, *x.shape)
    gamma = g.const("gamma", layer.gamma.reshape(view).astype(np.float32))
    beta = g.const("beta", layer.beta.reshape(view).astype(np.float32))
    scaled = g.op("Mul", [x.name, gamma], "affine_mul")
    return _Value(g.op("Add", [scaled, beta], "affine_add"), x.shape)


def _pool(g: GraphBuilder, x: _Value, layer: Pool) -> _Value:
    c, h, w = x.shape
    if layer.is_global:
        op = "GlobalMaxPool" if layer.op == "max" else "GlobalAveragePool"
        return _Value(g.op(op, [x.name], layer.kind), (c, 1, 1))
    (kh, kw), (sy, sx), (py, px) = layer.kernel, layer.stride, layer.padding
    if layer.op == "avg" and (py or px):
        raise DlibFormatError("avg_pool with padding: dlib's edge handling is not verified here")
    op = "MaxPool" if layer.op == "max" else "AveragePool"
    attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": [sy, sx]}
    attrs["pads"] = [py, px, py, px]
    name = g.op(op, [x.name], layer.kind, **attrs)
    return _Value(name, (c, 1 + (h + 2 * py - kh) // sy, 1 + (w + 2 * px - kw) // sx))


def _pad_to(g: GraphBuilder, x: _Value, shape: Shape) -> str:
    """dlib's zero padding at the end of every axis (tt::add on differently sized tensors)."""
    if x.shape == shape:
        return x.name
    ends = [0, *(t - s for t, s in zip(shape, x.shape, strict=True))]
    pads = g.const("pads", np.array([0] * len(ends) + ends, dtype=np.int64))
    return g.op("Pad", [x.name, pads], "pad")


def _merge(g: GraphBuilder, x: _Value, layer: Merge, tags: dict[int, _Value]) -> _Value:
    if layer.tag is None or layer.tag not in tags:
        raise DlibFormatError(f"{layer.kind} refers to tag {layer.tag}, which is not set")
    other = tags[layer.tag]
    if len(other.shape) != len(x.shape):
        raise DlibFormatError(f"{layer.kind}: ranks differ, {x.shape} vs {other.shape}")
    shape = tuple(max(a, b) for a, b in zip(x.shape, other.shape, strict=True))
    a, b = _pad_to(g, x, shape), _pad_to(g, other, shape)
    return _Value(g.op("Add" if layer.op == "add" else "Mul", [a, b], layer.kind), shape)


def _fc(g: GraphBuilder, x: _Value, layer: Fc) -> _Value:
    if int(np.prod(x.shape)) != layer.num_inputs:
        raise DlibFormatError(f"fc expects {layer.num_inputs} inputs, got {x.shape}")
    flat = g.op("Flatten", [x.name], "flatten", axis=1)
    out = g.op("MatMul", [flat, g.const("fc_W", layer.weights)], "fc")
    if layer.bias is not None:
        out = g.op("Add", [out, g.const("fc_B", layer.bias)], "fc_bias")
    return _Value(out, (layer.num_outputs,))


_ACTIVATIONS = {"relu": "Relu", "sig": "Sigmoid", "htan": "Tanh"}


def _emit(g: GraphBuilder, x: _Value, layer: Layer, tags: dict[int, _Value]) -> _Value:
    """One dlib layer; `tags` maps tag ids to the latest tagged value (dlib's layer<tagN>)."""
    if isinstance(layer, DlibConv):
        return _conv(g, x, layer)
    if isinstance(layer, Affine):
        return _affine(g, x, layer)
    if isinstance(layer, Activation):
        return _Value(g.op(_ACTIVATIONS[layer.function], [x.name], layer.kind), x.shape)
    if isinstance(layer, Pool):
        return _pool(g, x, layer)
    if isinstance(layer, Merge):
        return _merge(g, x, layer, tags)
    if isinstance(layer, Fc):
        return _fc(g, x, layer)
    if isinstance(layer, Multiply):
        k = g.const("k", np.array(layer.value, dtype=np.float32))
        return _Value(g.op("Mul", [x.name, k], "multiply"), x.shape)
    if isinstance(layer, Tag):
        tags[layer.id] = x
        return x
    if isinstance(layer, Skip):
        return tags[layer.id]
    raise DlibFormatError(f"cannot convert a {layer.kind!r} layer (resolve tags/skips first)")


# ---------------------------------------------------------------------------------------------
# The model


def _input_stage(g: GraphBuilder, net: DlibNet, dtype: InputDtype) -> _Value:
    """NHWC chips -> NCHW (pixel - mean); the /256 is left to the first conv."""
    rows, cols = net.input.size or (0, 0)
    x = INPUT_NAME
    if dtype == "uint8":
        x = g.op("Cast", [x], "cast", to=TensorProto.FLOAT)
    mean = g.const("mean_rgb", np.array(net.input.mean_rgb, dtype=np.float32))
    centred = g.op("Sub", [x, mean], "centre")
    return _Value(g.op("Transpose", [centred], "nchw", perm=[0, 3, 1, 2]), (3, rows, cols))


def resnet_to_onnx(
    net: DlibNet, *, input_dtype: InputDtype = "uint8", fold_affine: bool = True
) -> onnx.ModelProto:
    """Convert a parsed, structure-resolved dlib metric network (e.g. `load_resnet_v1`)."""
    if net.input.kind != "rgb_image_sized" or net.input.size is None:
        raise DlibFormatError(f"expected a fixed-size RGB input, got {net.input.kind}")
    if not isinstance(net.loss, LossMetric):
        raise DlibFormatError("expected a loss_metric network (a descriptor extractor)")
    layers = fold_layers(net.layers, fold_affine=fold_affine)
    if not isinstance(layers[0], DlibConv):
        raise DlibFormatError("expected a conv as the first layer")
    g = GraphBuilder()
    x = _input_stage(g, net, input_dtype)
    x = _conv(g, x, layers[0], scale=1 / 256)  # dlib's input scaling, exact (power of two)
    tags: dict[int, _Value] = {}
    for layer in layers[1:]:
        x = _emit(g, x, layer, tags)
    if len(x.shape) != 1:
        raise DlibFormatError(f"the network ends in shape {x.shape}, not a vector")
    g.nodes.append(helper.make_node("Identity", [x.name], [OUTPUT_NAME], name=OUTPUT_NAME))
    return _model(g, net, input_dtype, x.shape[0])


def _model(g: GraphBuilder, net: DlibNet, dtype: InputDtype, dim: int) -> onnx.ModelProto:
    rows, cols = net.input.size or (0, 0)
    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    inp = helper.make_tensor_value_info(INPUT_NAME, elem, ["N", rows, cols, 3])
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", dim])
    graph = helper.make_graph(g.nodes, "dlib_metric_net", [inp], [out], g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yingyan"
    )
    model.ir_version = 8  # opset 17's IR; keeps the file loadable by older runtimes
    model.doc_string = f"dlib metric network: {rows}x{cols} RGB chips (NHWC) -> {dim}-d"
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("yingyan"))


def cached_resnet_onnx(
    source: Path, *, name: str = "dlib_resnet_v1", cache_dir: Path | None = None
) -> Path:
    """The converted ResNet for `source` (see `cached_onnx`)."""
    return cached_onnx(
        source,
        name=name,
        version=CONVERTER_VERSION,
        build=lambda path: resnet_to_onnx(load_resnet_v1(path)),
        cache_dir=cache_dir,
    )


def cached_onnx(
    source: Path,
    *,
    name: str,
    version: int,
    build: Callable[[Path], onnx.ModelProto],
    cache_dir: Path | None = None,
) -> Path:
    """The model `build` converts from `source`, built once per source file (keyed by its
    sha256 and the converter `version`) and written by `atomic_write` (fsynced, renamed), so
    concurrent builders never expose a partial file, nor does a crash leave one that later
    calls would trust; later calls just return the path."""
    directory = cache_dir or default_cache_dir()
    target = directory / f"{name}-{file_sha256(source)[:12]}-c{version}.onnx"
    if target.is_file():
        return target
    model = build(source)
    model.metadata_props.add(key="source_sha256", value=file_sha256(source))
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(target, model.SerializeToString())
    return target
