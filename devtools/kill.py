"""Killing a run midway, for the tests that check what a rerun makes of what a kill left behind."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], kill: Callable[[], None], what: str,
              timeout_s: float = 300.0) -> bool:
    """Poll ``ready()`` every 20 ms while ``proc`` runs, then ``kill()`` and reap it. Fails when ``proc`` ends
    first or ``what`` does not happen within ``timeout_s``; returns whether ``proc`` was still running at the
    kill (False: it finished in between, and the kill proved nothing)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"not {what} within {timeout_s:g} s"
        time.sleep(0.02)
    running = proc.poll() is None
    kill()
    proc.wait()
    return running
