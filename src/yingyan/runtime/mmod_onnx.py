"""dlib's MMOD CNN face detector as an ONNX graph, plus the input layer dlib runs around it.

Graph contract: input `canvas`, float32 (1, 3, H, W) of any H, W: dlib's tiled image pyramid
in tensor space, i.e. (pixel - mean) / 256 with zero padding (`build_canvas`); output `scores`,
float32 (1, 1, H', W'): the raw score map, one value per detector-window position.

Why the pyramid stays in numpy: dlib builds it in tensor space (`input_rgb_image_pyramid`:
level 0 is normalised, each later level is a bilinear resize of the one before, in float32),
and its tile layout depends on the image size. Rebuilding that graph per size would cost more
than it saves, so `build_canvas` reproduces dlib's arithmetic instead: the resize below is
bit-identical to dlib's SIMD `resize_image` (float accumulation order included).

Folding: dlib loads each saved `bn_con` as an `affine_` (`BatchNorm.as_affine`), which directly
follows a conv and is folded into it; exact up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from yingyan.runtime.dlib_format import (
    Activation,
    BoxOverlap,
    DetectorWindow,
    DlibFormatError,
    DlibNet,
    LossMMOD,
    apply_structure,
    parse_dnn,
)
from yingyan.runtime.dlib_format import Conv as DlibConv
from yingyan.runtime.onnx_convert import OPSET, GraphBuilder, cached_onnx, fold_layers

CONVERTER_VERSION = 1  # bump when the graph changes, so cached files are rebuilt
INPUT_NAME = "canvas"
OUTPUT_NAME = "scores"
PYRAMID_N = 6  # dlib's face detector uses pyramid_down<6>; the file does not record it

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]


# ---------------------------------------------------------------------------------------------
# The network


def mmod_structure() -> list[str]:
    """Layer tokens of dlib's face detector (`net_type` in dlib's Python binding,
    tools/python/src/cnn_face_detector.cpp), input side first."""
    return ["con", "bn", "relu"] * 6 + ["con"]


def load_mmod(path: Path | str) -> DlibNet:
    """mmod_human_face_detector.dat, parsed and checked against the detector's structure."""
    net = apply_structure(parse_dnn(path), mmod_structure())
    if net.input.kind != "rgb_image_pyramid" or not isinstance(net.loss, LossMMOD):
        raise DlibFormatError("expected an image-pyramid input and an MMOD loss")
    return net


@dataclass(frozen=True, slots=True)
class MmodSpec:
    """Everything around the graph that the detector needs, read from the file: the input
    normalisation and pyramid padding, the one detector window, the NMS rule, where each
    score sits in the canvas (pixel `stride * p + offset` for score-map position p, dlib's
    `map_output_to_input` through the convs) and the smallest canvas with a score map."""

    mean_rgb: tuple[float, float, float]
    padding: int
    outer_padding: int
    window: DetectorWindow
    nms: BoxOverlap
    stride: int
    offset: int
    min_canvas: int


def mmod_spec(net: DlibNet) -> MmodSpec:
    if not isinstance(net.loss, LossMMOD):
        raise DlibFormatError("not an MMOD network")
    options = net.loss.options
    if len(options.detector_windows) != 1 or options.use_bounding_box_regression:
        raise DlibFormatError("only one detector window without box regression is supported")
    convs = [x for x in net.layers if isinstance(x, DlibConv)]
    if any(a != b for c in convs for a, b in (c.kernel, c.stride, c.padding)):
        raise DlibFormatError("only square kernels, strides and paddings are supported")
    stride, offset = 1, 0
    for conv in convs:  # input side first; each maps p -> p * stride - padding + kernel // 2
        offset += stride * (conv.kernel[1] // 2 - conv.padding[1])
        stride *= conv.stride[1]
    side = 1  # one score, then back through the convs to the input size it needs
    for conv in reversed(convs):
        side = (side - 1) * conv.stride[1] + conv.kernel[1] - 2 * conv.padding[1]
    return MmodSpec(
        mean_rgb=net.input.mean_rgb,
        padding=net.input.pyramid_padding or 0,
        outer_padding=net.input.pyramid_outer_padding or 0,
        window=options.detector_windows[0],
        nms=options.overlaps_nms,
        stride=stride,
        offset=offset,
        min_canvas=max(side, 1),
    )


def mmod_to_onnx(net: DlibNet) -> onnx.ModelProto:
    """The fully-convolutional graph: folded convs and ReLUs, dynamic height and width."""
    g = GraphBuilder()
    x = INPUT_NAME
    for layer in fold_layers(net.layers):
        if isinstance(layer, DlibConv):
            x = _conv(g, x, layer)
        elif isinstance(layer, Activation) and layer.function == "relu":
            x = g.op("Relu", [x], "relu")
        else:
            raise DlibFormatError(f"unexpected {layer.kind!r} layer in an MMOD network")
    g.nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name=OUTPUT_NAME))
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, "H", "W"])
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 1, "OH", "OW"])
    graph = helper.make_graph(g.nodes, "dlib_mmod", [inp], [out], g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yingyan"
    )
    model.ir_version = 8  # opset 17's IR; keeps the file loadable by older runtimes
    model.doc_string = "dlib MMOD face detector: tiled pyramid canvas -> score map"
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv(g: GraphBuilder, x: str, conv: DlibConv) -> str:
    (py, px), (sy, sx) = conv.padding, conv.stride
    w, b = g.const("W", conv.weights), g.const("B", conv.bias)
    attrs = {"kernel_shape": list(conv.kernel), "strides": [sy, sx], "pads": [py, px, py, px]}
    return g.op("Conv", [x, w, b], "conv", **attrs)


def cached_mmod_onnx(source: Path, *, cache_dir: Path | None = None) -> Path:
    """The converted detector for `source`, built once and cached like the ResNet."""
    return cached_onnx(
        source,
        name="dlib_mmod",
        version=CONVERTER_VERSION,
        build=lambda path: mmod_to_onnx(load_mmod(path)),
        cache_dir=cache_dir,
    )


# ---------------------------------------------------------------------------------------------
# The tiled pyramid (dlib/image_transforms/image_pyramid.h, dlib/dnn/input.h)

_U64 = 1 << 64
_ROW_BLOCK = 16  # rows per step of the resize: keeps its temporaries in cache


@dataclass(frozen=True, slots=True)
class Tile:
    """Where one pyramid level sits in the canvas (exclusive bottom/right)."""

    top: int
    left: int
    rows: int
    cols: int

    @property
    def bottom(self) -> int:
        return self.top + self.rows

    @property
    def right(self) -> int:
        return self.left + self.cols

    def overlaps(self, other: Tile) -> bool:
        rows = max(self.top, other.top) < min(self.bottom, other.bottom)
        return rows and max(self.left, other.left) < min(self.right, other.right)


@dataclass(frozen=True, slots=True)
class PyramidLayout:
    tiles: tuple[Tile, ...]  # level 0 (the image itself) first
    rows: int
    cols: int


def pyramid_sizes(rows: int, cols: int) -> list[tuple[int, int]]:
    """Level sizes of pyramid_down<N>: each 5/6 of the last (floored, in double), down to
    5 rows."""
    rate = (PYRAMID_N - 1.0) / PYRAMID_N
    sizes = [(rows, cols)]
    while True:
        rows, cols = math.floor(rate * rows), math.floor(rate * cols)
        if rows * cols == 0 or rows < 5:
            return sizes
        sizes.append((rows, cols))


def _first_column_height(sizes: list[tuple[int, int]], padding: int) -> int:
    """dlib's rule for how far down the first column goes, with its unsigned arithmetic
    (rectangle sizes are unsigned long there, which matters for the first two levels)."""
    h0, w0 = sizes[0]
    total = sum(h + padding for h, _ in sizes) - 2 * padding
    height = prev_width = 0
    for h, w in sizes:
        fits_beside = w <= (w0 - prev_width - padding) % _U64
        half_done = (2 * (height - h0)) % _U64 >= (total - h0) % _U64
        if fits_beside and half_done:
            break
        height += h + padding
        prev_width = w
    return height - padding


def tile_pyramid(rows: int, cols: int, padding: int, outer_padding: int) -> PyramidLayout:
    """Place the levels as dlib does: down a first column, then back up a second column,
    right-aligned, stopping before a level would overlap the image itself."""
    if rows * cols == 0:
        return PyramidLayout((), 0, 0)
    sizes = pyramid_sizes(rows, cols)
    height = _first_column_height(sizes, padding)
    tiles: list[Tile] = []
    y = outer_padding
    while y < height + outer_padding and len(tiles) < len(sizes):
        h, w = sizes[len(tiles)]
        tiles.append(Tile(y, outer_padding, h, w))
        y += h + padding
    if not tiles:  # narrower than the padding: dlib's layout degenerates, no usable canvas
        return PyramidLayout((), 0, 0)
    y -= padding
    while len(tiles) < len(sizes):
        h, w = sizes[len(tiles)]
        tile = Tile(y - h, outer_padding + cols - w, h, w)
        if tile.overlaps(tiles[0]):
            break
        tiles.append(tile)
        y -= h + padding
    return PyramidLayout(tuple(tiles), height + 2 * outer_padding, cols + 2 * outer_padding)


def build_canvas(image: npt.NDArray[np.uint8], layout: PyramidLayout, mean_rgb: F32) -> F32:
    """The (1, 3, H, W) input tensor dlib builds: normalised image, zero padding, and each
    level resized from the one before it."""
    canvas = np.zeros((1, 3, layout.rows, layout.cols), np.float32)
    planes = canvas[0]
    first = _region(planes, layout.tiles[0])
    np.subtract(np.moveaxis(image, -1, 0), mean_rgb[:, None, None], out=first, dtype=np.float32)
    first /= 256  # exact: a power of two
    for src, dst in zip(layout.tiles, layout.tiles[1:], strict=False):
        resize_planes(_region(planes, src), _region(planes, dst))
    return canvas


def _region(planes: F32, tile: Tile) -> F32:
    return planes[:, tile.top : tile.bottom, tile.left : tile.right]


# ---------------------------------------------------------------------------------------------
# dlib's bilinear resize_image (dlib/image_transforms/interpolation.h): source position
# out * (n_in - 1) / (n_out - 1). Rows step in double; columns go four at a time in float32
# until the right neighbour of the fourth would leave the image, then one at a time in double.


@dataclass(frozen=True, slots=True)
class _Columns:
    n_simd: int
    left: Ints  # the float32 part
    frac: F32
    tail_left: Ints  # the double part
    tail_right: Ints
    tail_frac: F64


def _row_sampling(n_in: int, n_out: int) -> tuple[Ints, Ints, F64]:
    scale = (n_in - 1) / max(n_out - 1, 1)
    y = np.cumsum(np.concatenate(([0.0], np.full(n_out - 1, scale))))  # y += scale, in order
    top = np.floor(y).astype(np.intp)
    return top, np.minimum(top + 1, n_in - 1), y - top


def _column_sampling(n_in: int, n_out: int) -> _Columns:
    scale = (n_in - 1) / max(n_out - 1, 1)
    groups = -(-n_out // 4)
    steps = np.empty((groups + 1, 4), np.float32)
    steps[0] = [-4 * scale + k * scale for k in range(4)]
    steps[1:] = 4 * scale
    x = np.cumsum(steps, axis=0, dtype=np.float32)[1:]  # float32 accumulation, as SIMD does
    left = x.astype(np.intp)  # truncation (_mm_cvttps_epi32); x >= 0
    leaving = np.flatnonzero(left[:, 3] + 1 >= n_in)
    n_simd = min(n_out, 4 * int(leaving[0]) if leaving.size else 4 * groups)
    frac = (x - left.astype(np.float32)).reshape(-1)[:n_simd]
    tail = np.cumsum(np.concatenate(([-scale + n_simd * scale], np.full(n_out - n_simd, scale))))
    tail_x = tail[1:]
    tail_left = np.floor(tail_x).astype(np.intp)
    return _Columns(
        n_simd,
        left.reshape(-1)[:n_simd],
        frac,
        tail_left,
        np.minimum(tail_left + 1, n_in - 1),
        tail_x - tail_left,
    )


def resize_planes(src: F32, out: F32) -> None:
    """Resize float32 (C, h, w) planes into `out` exactly as dlib's float resize_image."""
    _resize(src, out, rgb=False)


def resize_rgb(image: npt.NDArray[np.uint8], rows: int, cols: int) -> npt.NDArray[np.uint8]:
    """Resize an RGB image exactly as dlib's rgb_pixel resize_image (pyramid_up uses it):
    the same sampling, values truncated to uint8."""
    out = np.empty((3, rows, cols), np.float32)
    _resize(np.moveaxis(image, -1, 0).astype(np.float32), out, rgb=True)
    return np.ascontiguousarray(np.moveaxis(np.trunc(out).astype(np.uint8), 0, -1))


def _resize(src: F32, out: F32, *, rgb: bool) -> None:
    """Both variants share the float32 part; in the scalar tail the rgb_pixel one works in
    double and truncates, the float one interpolates columns in float32. Works in blocks
    of rows so the temporaries stay in cache."""
    top, bottom, tb = _row_sampling(src.shape[1], out.shape[1])
    cols = _column_sampling(src.shape[2], out.shape[2])
    s = cols.n_simd
    pairs = np.concatenate([cols.left, cols.left + 1])  # both neighbours in one gather
    w_up, w_low = (1 - tb).astype(np.float32), tb.astype(np.float32)
    for r in range(0, out.shape[1], _ROW_BLOCK) if s else ():
        rows = slice(r, r + _ROW_BLOCK)
        # (indexing, not np.take, for the rows: take is very slow on a strided view)
        upper = np.take(src[:, top[rows]], pairs, axis=2)
        lower = np.take(src[:, bottom[rows]], pairs, axis=2)
        _blend(upper, lower, w_up[rows, None], w_low[rows, None], cols.frac, out[:, rows, :s])
    if s == out.shape[2]:
        return
    edge = src[..., np.concatenate([cols.tail_left, cols.tail_right])]
    frac = cols.tail_frac if rgb else cols.tail_frac.astype(np.float32)
    up, low = _lerp(edge[:, top], frac), _lerp(edge[:, bottom], frac)
    tail = (1 - tb)[:, None] * up.astype(np.float64) + tb[:, None] * low.astype(np.float64)
    out[:, :, s:] = np.trunc(tail) if rgb else tail


def _blend(upper: F32, lower: F32, w_up: F32, w_low: F32, frac: F32, out: F32) -> None:
    """dlib's SIMD sum tl*w_tl + tr*w_tr + bl*w_bl + br*w_br, in that float32 order;
    `upper`/`lower` hold the left neighbours, then the right ones. Clobbers its inputs."""
    s = frac.size
    np.multiply(upper[..., :s], w_up * (1 - frac), out=out)
    out += np.multiply(upper[..., s:], w_up * frac, out=upper[..., s:])
    out += np.multiply(lower[..., :s], w_low * (1 - frac), out=lower[..., :s])
    out += np.multiply(lower[..., s:], w_low * frac, out=lower[..., s:])


def _lerp(pairs: F32, frac: F32 | F64) -> F32 | F64:
    """Left neighbours, then right ones, along the last axis; in the dtype of `frac`."""
    n = frac.size
    result: F32 | F64 = (1 - frac) * pairs[..., :n].astype(frac.dtype) + frac * pairs[..., n:]
    return result


# ---------------------------------------------------------------------------------------------
# Tensor space -> image space (tiled_pyramid_to_image)


def canvas_to_image(layout: PyramidLayout, boxes: F64) -> F64:
    """Map (n, 4) left/top/right/bottom canvas boxes to image coordinates: each box belongs
    to the level nearest its centre, and is scaled up from that level by pyramid_down<N>'s
    point_up (p * N/(N-1) + 0.3, once per level)."""
    tiles = layout.tiles
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None]  # whole pixels: windows are centred on
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None]  # score-map positions
    top = np.array([t.top for t in tiles])
    left = np.array([t.left for t in tiles])
    bottom = np.array([t.bottom - 1 for t in tiles])
    right = np.array([t.right - 1 for t in tiles])
    dx = np.maximum(np.maximum(left - cx, cx - right), 0)
    dy = np.maximum(np.maximum(top - cy, cy - bottom), 0)
    level = np.argmin(np.hypot(dx, dy), axis=1)  # first of the nearest, as dlib
    origin = np.stack([left[level], top[level], left[level], top[level]], axis=1)
    out = np.asarray(boxes - origin, dtype=np.float64)
    ratio = PYRAMID_N / (PYRAMID_N - 1.0)
    for k in range(int(level.max(initial=0))):
        up = level > k
        out[up] = out[up] * ratio + 0.3
    return out
