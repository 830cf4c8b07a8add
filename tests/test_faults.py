"""Fault checks (loadtests/faults.py) on the session's artifact: a Bento worker killed mid-load (2 workers) and a
request past the request timeout. The Triton python-stub kill runs in CI against the Triton runtime
(tests/test_triton_recovery.py) and through a Bento as a scripted check (``python loadtests/faults.py triton-stub``,
about two minutes); results and recovery times: docs/reliability.md "Faults"."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

pytest.importorskip("httpx")
pytest.importorskip("psutil")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # loadtests/ is no installed package: import it from the checkout
    sys.path.insert(0, str(REPO))


def test_worker_killed_mid_load_is_restarted_and_service_restored(trained_artifact, tmp_path) -> None:
    from loadtests import faults

    with ExitStack() as stack:
        result = faults.worker_kill(trained_artifact, stack, tmp_path)
    print(json.dumps(result, indent=1, default=str))
    assert result["worker_restarted_s"] is not None, "BentoML did not start a new worker"
    assert result["new_worker_loaded_s"] is not None and len(result["workers_at_end"]) == 2
    # the requests in flight on the killed worker fail as dropped connections (never a wrong 200), then all succeed
    assert all(o.startswith(("connection", "50")) for _, _, o, _ in result["failures_after_fault"]), result
    assert result["ok_after_last_failure"] > 0
    assert set(result["probe_fresh_connections"]) == {"ok"}
    assert result["ok"]


def test_request_past_the_timeout_gets_504_with_the_error_shape(trained_artifact, tmp_path) -> None:
    from loadtests import faults

    with ExitStack() as stack:
        result = faults.request_timeout(trained_artifact, stack, tmp_path, timeout_s=1.0)
    print(json.dumps(result, indent=1, default=str))
    assert result["status"] == 504
    assert result["body"]["error"]["code"] == "timeout" and set(result["body"]["error"]) == {"code", "message", "field"}
    assert result["answered_after_s"] < 3.0  # at the timeout, not when the batch finishes
    assert result["metadata_status"] == 200 and result["next_request_status"] == 200
    assert result["ok"]
