"""Shared by the serve_*.py benchmarks: start `kiln serve` as a child process on a free
loopback port, wait until it is ready, read its RSS, stop it with SIGTERM."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


@dataclass
class Served:
    url: str
    proc: subprocess.Popen

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


@contextlib.contextmanager
def kiln_serve(repo: str, *args: str, ready_timeout: float = 120) -> Iterator[Served]:
    proc = subprocess.Popen([sys.executable, "-m", "kiln", "serve", repo, "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"kiln serve did not start: {line}{proc.stderr.read()}")
    url = match.group(1)
    deadline = time.monotonic() + ready_timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("kiln serve never became ready")
        time.sleep(0.1)
    served = Served(url, proc)
    try:
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
