"""Drive ``runner.py`` in child processes: restart after a crash, kill after a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RUNNER = Path(__file__).resolve().parent / "runner.py"


def run_isolated(backend: str, names: list[str], per_case: float = 60.0) -> dict[str, tuple]:
    """{case: (outcome, message)}; outcome "crash: <signal>" or "hang" when the child died."""
    results: dict[str, tuple] = {}
    pending = list(names)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    while pending:
        child = subprocess.Popen([sys.executable, str(RUNNER), backend, *pending],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env, start_new_session=True)
        running = None
        deadline = time.monotonic() + per_case * 3  # first case pays for imports
        try:
            assert child.stdout is not None
            while True:
                line = _readline(child, deadline)
                if line is None:  # timed out
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                    results[running or pending[0]] = ("hang", f"no answer in {per_case} s")
                    break
                if not line:  # child exited
                    code = child.wait()
                    if running is not None:
                        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
                        results[running] = (f"crash: {name}", child.stderr.read()[-2000:])
                    break
                record = json.loads(line)
                if "start" in record:
                    running = record["start"]
                    deadline = time.monotonic() + per_case
                else:
                    results[record["case"]] = (record["outcome"], record["message"])
                    running = None
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        pending = [n for n in pending if n not in results]
    return results


def _readline(child: subprocess.Popen, deadline: float) -> str | None:
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if selector.select(timeout=remaining):
                return child.stdout.readline()
    finally:
        selector.close()
