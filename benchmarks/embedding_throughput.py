"""Embedding throughput: dlib's ResNet on dlib (reference) vs onnxruntime, in the same run.

    python benchmarks/embedding_throughput.py [--chips 64]

Faces per second at batch 1 and 32, on one thread and on all threads, on real LFW chips; the
model's GFLOPs per face (counted from the ONNX graph); and the fraction of one core's peak the
ONNX path reaches: theoretical (AVX-512: 2 FMA units x 16 float32 lanes x 2 FLOPs per cycle at
the nominal clock) and measured (a 2048^3 single-thread SGEMM through NumPy's BLAS).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the SGEMM peak is measured on one core

import argparse
import re
from pathlib import Path

import onnx
from onnx import shape_inference

from yingyan.embedding import DlibResNet, OnnxDlibResNet
from yingyan.models import dlib_model
from yingyan.runtime.onnx_convert import cached_resnet_onnx
from yingyan.runtime.onnx_session import available_cores

from _common import best_time, lfw_chips, sgemm_gflops


def graph_gflops(path: Path) -> float:
    """Multiply-adds x 2 of every Conv and MatMul for one 150x150 chip."""
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output]
    }
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    flops = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]  # (Cout, Cin, kh, kw)
            out = shapes[node.output[0]]  # (1, Cout, H, W)
            flops += 2 * w[0] * w[1] * w[2] * w[3] * out[2] * out[3]
        elif node.op_type in ("MatMul", "Gemm"):
            w = inits[node.input[1]]
            flops += 2 * w[0] * w[1]
    return flops / 1e9


def nominal_ghz() -> float:
    text = Path("/proc/cpuinfo").read_text()
    m = re.search(r"@ ([0-9.]+)GHz", text)
    if m:
        return float(m.group(1))
    m = re.search(r"cpu MHz\s*:\s*([0-9.]+)", text)
    return float(m.group(1)) / 1000 if m else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chips", type=int, default=64, help="distinct LFW chips (cycled)")
    args = ap.parse_args()
    chips = lfw_chips(args.chips)
    cores = available_cores()
    rows: list[tuple[str, int, int, float]] = []

    def measure(label: str, embed: object, threads: int, batch: int, n: int) -> float:
        assert callable(embed)
        work = [chips[i % len(chips)] for i in range(n)]

        def run() -> None:
            for i in range(0, n, batch):
                embed(work[i : i + batch])

        rate = n / best_time(run, repeat=2)
        rows.append((label, threads, batch, rate))
        return rate

    dlib = DlibResNet()
    ref = {b: measure("dlib (reference)", dlib.embed, 1, b, 32) for b in (1, 32)}
    fast: dict[tuple[int, int], float] = {}
    for threads in sorted({1, cores}):
        onnx_embedder = OnnxDlibResNet(threads=threads, batch_size=32)
        for b in (1, 32):
            fast[(threads, b)] = measure("onnxruntime", onnx_embedder.embed, threads, b, 256)

    gflop = graph_gflops(cached_resnet_onnx(dlib_model("dlib_resnet_v1").path))
    ghz = nominal_ghz()
    theoretical = ghz * 2 * 16 * 2  # GFLOP/s of one AVX-512 core with two FMA units
    measured = sgemm_gflops()

    print(f"\nResNet: {gflop:.3f} GFLOP per face; {cores} core(s) available\n")
    print("| backend | threads | batch | faces/s | ms/face | vs dlib, same batch |")
    print("|---|---|---|---|---|---|")
    for label, threads, batch, rate in rows:
        ratio = rate / ref[batch]
        print(f"| {label} | {threads} | {batch} | {rate:.1f} | {1000 / rate:.2f} | {ratio:.1f}× |")
    best1 = max(fast[(1, b)] for b in (1, 32))
    achieved = best1 * gflop
    print(
        f"\nONNX, one thread: {achieved:.1f} GFLOP/s = {100 * achieved / theoretical:.0f}% of "
        f"the theoretical {theoretical:.0f} GFLOP/s ({ghz:.2f} GHz x 64 FLOP/cycle) and "
        f"{100 * achieved / measured:.0f}% of a measured single-thread SGEMM ({measured:.0f} "
        f"GFLOP/s)."
    )
    print(f"Speed-up over dlib on one thread: {best1 / max(ref.values()):.1f}× (best batch each)")


if __name__ == "__main__":
    main()
