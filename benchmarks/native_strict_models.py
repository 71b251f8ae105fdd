"""Corpus models that must run wholly on native (``fallback=None``), against onnxruntime.

    python benchmarks/native_strict_models.py [NAME ...]

For each model (default: the If models silero_vad*, the LSTM recognizer ddddocr_lstm and the
GRU VAD akiki_vad): the session's placement (nodes off native must be 0), and the max abs
difference of every output from onnxruntime on the corpus's own feeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import kiln  # noqa: E402
from benchmarks.real_model_corpus import by_name, feeds, fetch  # noqa: E402
from kiln.compiler.frontend import import_model  # noqa: E402

DEFAULT = ["silero_vad", "silero_vad_16k_op15", "silero_vad_half", "ddddocr_lstm", "akiki_vad"]


def main() -> int:
    names = sys.argv[1:] or DEFAULT
    worst = 0.0
    for name in names:
        model = by_name(name)
        path = fetch(model)
        feed = feeds(model)
        try:
            native = kiln.Session(str(path), backend="native", fallback=None)
        except kiln.UnsupportedError as exc:
            print(f"{name:20} refused with fallback=None: {str(exc)[:200]}")
            worst = float("inf")
            continue
        ref = kiln.Session(str(path), backend="onnxruntime")
        got, want = native.run(None, feed), ref.run(None, feed)
        diff = max(float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64))))
                   if g.size else 0.0 for g, w in zip(got, want))
        ops = sorted({n.op_type for n in import_model(path).graph})
        worst = max(worst, diff)
        print(f"{name:20} native, fallback=None: max abs diff vs onnxruntime {diff:.3g} "
              f"(top-level ops include {', '.join(o for o in ops if o in KEY_OPS) or '-'})")
    return 0 if worst < 1e-3 else 1


KEY_OPS = {"If", "Loop", "Scan", "LSTM", "GRU", "RNN"}

if __name__ == "__main__":
    raise SystemExit(main())
