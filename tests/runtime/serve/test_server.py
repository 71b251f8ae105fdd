"""`kiln serve` as a user runs it: a child process; SIGTERM finishes in-flight requests,
refuses new connections, then exits 0."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from kiln.runtime.serve.protocol import encode_request


def _start(repo, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "kiln", "serve", str(repo), "--port", "0",
                             *args], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        pytest.fail(f"kiln serve did not start: {line}{proc.stderr.read()}")
    url = match.group(1)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "kiln serve never became ready"
        time.sleep(0.05)


def test_sigterm_drains_in_flight_requests_then_exits(serve_repo):
    # a 1.5 s batching window keeps the request in flight while SIGTERM arrives
    proc, url = _start(serve_repo, "--max-queue-delay-ms", "1500")
    try:
        body, headers = encode_request({"x": np.ones((1, 4), np.float32)})
        result: dict = {}

        def infer() -> None:
            result["reply"] = httpx.post(f"{url}/v2/models/linear/infer", content=body,
                                         headers=headers, timeout=30)

        worker = threading.Thread(target=infer)
        worker.start()
        time.sleep(0.4)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # the listening socket is closed
            httpx.get(f"{url}/v2/health/live", timeout=5)
        worker.join(30)
        assert result["reply"].status_code == 200
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_repository_is_a_clear_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "kiln", "serve", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "is not a folder" in run.stderr
