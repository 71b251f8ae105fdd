"""Start-up figures for ``kiln bench --startup``: each engine opened in a fresh process, so no
engine inherits another's peak, its allocator state or its caches.

Per (backend, precision), two child processes (``python -m kiln.runtime.bench_startup``):

- cold: import what the engine needs, read the RSS (the baseline), open the model (kiln
  compiles it), run it once on the bench feeds: time to first inference and the peak RSS
  above the baseline. Then, outside what was measured, save the ``.kiln`` artifact.
- warm: the same for that artifact (verify, restore the backend's blobs or rebuild).

A .kiln given to the bench is only opened warm. The children read the feeds from a .npz
(no pickle) and write one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Seconds each child may take (compiling included).
CHILD_TIMEOUT = 600.0


def status_mb(field: str) -> float | None:
    """This process's ``/proc/self/status`` figure ``field`` (VmRSS, VmHWM) in MB, if readable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _open_and_run(model: str, backend: str, precision: str | None, threads: int | None,
                  options: Mapping[str, Any], feeds_path: str) -> tuple[Any, dict[str, Any]]:
    """In the child: the session and its figures (seconds to first inference, peak MB)."""
    from kiln.backends import registry

    registry.availability(backend)  # the backend's SDK imported before the baseline
    from kiln.runtime.session import Session

    with np.load(feeds_path, allow_pickle=False) as data:
        feeds = {k: data[k] for k in data.files}
    base = status_mb("VmRSS")
    started = time.perf_counter()
    # a .kiln runs at the precision it was compiled for
    session = Session(model, backend=backend, threads=threads, **options,
                      precision=None if model.endswith(".kiln") else precision)
    session.run(None, feeds)
    first = time.perf_counter() - started
    peak = status_mb("VmHWM")
    return session, {"first_run_s": first,
                     "peak_mb": None if peak is None or base is None else peak - base}


def child_main(argv: list[str]) -> None:
    """``python -m kiln.runtime.bench_startup REQUEST_JSON``: measure, print one JSON line."""
    request = json.loads(argv[0])
    session, figures = _open_and_run(request["model"], request["backend"],
                                     request.get("precision"), request.get("threads"),
                                     request.get("options") or {}, request["feeds"])
    save_to = request.get("save_to")
    if save_to:
        session.compiled.save(save_to)
        figures["artifact_bytes"] = Path(save_to).stat().st_size
    print(json.dumps(figures))


def _in_child(request: dict[str, Any]) -> dict[str, Any]:
    try:
        done = subprocess.run([sys.executable, "-m", "kiln.runtime.bench_startup",
                               json.dumps(request)], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {CHILD_TIMEOUT:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return {"error": lines[-1]}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "the child printed no figures"}


def json_options(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """``options`` when a child can be given them as JSON, else None."""
    try:
        return json.loads(json.dumps(dict(options)))
    except (TypeError, ValueError):
        return None


def write_feeds(folder: Path, feeds: Mapping[str, np.ndarray]) -> Path:
    """``feeds`` as the .npz the children read, in ``folder`` (written once for every engine
    of a bench)."""
    path = Path(folder) / "feeds.npz"
    np.savez(path, **dict(feeds))
    return path


def measure_startup(model: str, backend: str, precision: str | None, threads: int | None,
                    options: Mapping[str, Any], feeds: Mapping[str, np.ndarray] | Path
                    ) -> dict[str, Any]:
    """Cold and warm start-up of ``model`` (a .onnx or .kiln path) on ``backend``, each in a
    fresh process: ``{"cold": {...}, "warm": {...}}``, each holding ``first_run_s`` and
    ``peak_mb`` (or ``error``); a .kiln has no cold figures (it is compiled already).
    ``feeds`` may be the .npz ``write_feeds`` wrote."""
    passed = json_options(options)
    if passed is None:
        reason = "session options that are not JSON cannot reach a child process"
        return {"cold": {"error": reason}, "warm": {"error": reason}}
    with tempfile.TemporaryDirectory(prefix="kiln-startup-") as tmp:
        feeds_path = str(feeds if isinstance(feeds, Path) else write_feeds(Path(tmp), feeds))
        base = {"backend": backend, "precision": precision, "threads": threads,
                "options": passed, "feeds": feeds_path}
        if model.endswith(".kiln"):
            return {"cold": None, "warm": _in_child({**base, "model": model})}
        artifact = str(Path(tmp) / "model.kiln")
        cold = _in_child({**base, "model": model, "save_to": artifact})
        if "error" in cold or not Path(artifact).is_file():
            return {"cold": cold, "warm": {"error": "no artifact: the cold start failed"}}
        return {"cold": cold, "warm": _in_child({**base, "model": artifact})}


if __name__ == "__main__":
    child_main(sys.argv[1:])
