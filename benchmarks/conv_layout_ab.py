"""A/B of the native conv layout hand-over (compiler/passes/nhwc_layout.py) in one
interleaved run: native with float activations handed from conv to conv in NHWC against
native with every conv reading and writing NCHW (``KILN_NATIVE_F32_NHWC=0`` while that
session compiles), with onnxruntime beside them for scale.

    python benchmarks/conv_layout_ab.py --models resnet50,densenet121,inception_v1,squeezenet \
        --threads 2,1 --rounds 6 --block 10

Engines take turns (the order rotates every round, a 0.1 s pause and one untimed call before
each block, as native_vs_peers.py); medians of every timed call. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchmarks.native_vs_peers as peers  # noqa: E402

SWITCH = "KILN_NATIVE_F32_NHWC"


def open_native(path: Path, threads: int, nhwc: bool):
    before = os.environ.get(SWITCH)
    os.environ[SWITCH] = "1" if nhwc else "0"
    try:
        return peers.open_engine("native", path, threads)[0]
    finally:
        if before is None:
            os.environ.pop(SWITCH, None)
        else:
            os.environ[SWITCH] = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,densenet121,inception_v1,squeezenet")
    parser.add_argument("--threads", default="2,1")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| model | threads | native NHWC ms | native NCHW ms | NHWC / NCHW | onnxruntime ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for _, name, path in peers.resolve_models(args.models, peers.REAL_DIR):
        feeds = peers.model_feeds(path, {}, args.image_size, {})
        for threads in (int(t) for t in args.threads.split(",")):
            runners = {"nhwc": open_native(path, threads, True),
                       "nchw": open_native(path, threads, False),
                       "onnxruntime": peers.open_engine("onnxruntime", path, threads)[0]}
            samples = peers.measure(runners, feeds, "b2b", args.rounds, args.block,
                                    random.Random(0))
            med = {k: statistics.median(v) for k, v in samples.items()}
            print(f"| {name} | {threads} | {med['nhwc']:.2f} | {med['nchw']:.2f} | "
                  f"{med['nhwc'] / med['nchw']:.3f} | {med['onnxruntime']:.2f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
