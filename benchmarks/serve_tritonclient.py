"""A v2 client kiln did not write (tritonclient[http], binary tensors) against `kiln serve`:
ready, metadata, infer equal to Session's, and a wrong shape answered 400.

    python benchmarks/serve_tritonclient.py /work/cache/serve_repo [MODEL]

Writes benchmarks/results/serve_tritonclient.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from serve_common import kiln_serve
from tritonclient.utils import InferenceServerException

import kiln


def main(repo: str, model: str = "mobilenet_v2") -> dict:
    path = next(Path(repo, model).glob("*/model.*"))
    session = kiln.Session(str(path))
    spec = session.inputs[0]
    x = np.random.default_rng(0).standard_normal(
        [d if isinstance(d, int) else 4 for d in spec.shape]).astype(np.float32)
    expected = session(**{spec.name: x})
    with kiln_serve(repo) as served:
        client = httpclient.InferenceServerClient(served.url.removeprefix("http://"))
        feed = httpclient.InferInput(spec.name, list(x.shape), "FP32")
        feed.set_data_from_numpy(x, binary_data=True)
        outputs = [httpclient.InferRequestedOutput(o.name, binary_data=True)
                   for o in session.outputs]
        result = client.infer(model, [feed], outputs=outputs)
        diffs = {o.name: float(np.abs(result.as_numpy(o.name) - expected[o.name]).max())
                 for o in session.outputs}
        wrong = np.zeros([2, 3, 100, 100], np.float32)
        bad = httpclient.InferInput(spec.name, list(wrong.shape), "FP32")
        bad.set_data_from_numpy(wrong)
        try:
            client.infer(model, [bad])
            refused = None
        except InferenceServerException as exc:
            refused = {"status": exc.status(), "message": exc.message()}
        report = {"model": model, "server_live": client.is_server_live(),
                  "server_ready": client.is_server_ready(),
                  "model_ready": client.is_model_ready(model),
                  "metadata": client.get_model_metadata(model),
                  "input_shape": list(x.shape), "max_abs_diff_vs_session": diffs,
                  "equal_to_session": all(d == 0.0 for d in diffs.values()),
                  "wrong_shape": refused}
    out = Path(__file__).parent / "results" / "serve_tritonclient.json"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/cache/serve_repo",
         sys.argv[2] if len(sys.argv) > 2 else "mobilenet_v2")
