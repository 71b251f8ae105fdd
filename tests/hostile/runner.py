"""Run hostile cases in a child process, so a backend crash or hang cannot take pytest down.

    python tests/hostile/runner.py BACKEND CASE [CASE ...]

Prints one JSON line per case, preceded by a "start" line flushed before the case runs, so the
parent knows which case was running if the child dies.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: model_builders

import cases  # noqa: E402


def main(argv: list[str]) -> int:
    backend, names = argv[0], argv[1:]
    for name in names:
        print(json.dumps({"start": name}), flush=True)
        with tempfile.TemporaryDirectory() as folder:
            outcome, message = cases.run_case(cases.by_name(name), backend, Path(folder))
        print(json.dumps({"case": name, "outcome": outcome, "message": message}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
