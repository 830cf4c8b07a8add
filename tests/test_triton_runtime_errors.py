"""Which Triton failures the Triton runtime retries and then answers as 503 (the server cannot answer now), and
which are the request's own error (422 for that item)."""

from __future__ import annotations

import pytest

from essayscore.runtimes.triton import _is_transient


class _TritonError(Exception):
    """Shaped like tritonclient's InferenceServerException: a message and a status()."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self._status = status

    def status(self):
        return self._status


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError("connection refused"),
    TimeoutError("timed out"),
    _TritonError("[StatusCode.UNAVAILABLE] failed to connect to all addresses", "StatusCode.UNAVAILABLE"),
    _TritonError("Request for unknown model: 'essay_scorer' is not found"),
    # seen when a python-backend stub process is killed mid-load (loadtests/faults.py triton-stub)
    _TritonError("in ensemble 'essay_scorer', Stub process 'preprocess_0_0' is not healthy."),
])
def test_server_side_failures_are_transient(exc):
    assert _is_transient(exc)


@pytest.mark.parametrize("exc", [
    _TritonError("in ensemble 'essay_scorer', preprocess: ESSAY is empty or only whitespace",
                 "StatusCode.INVALID_ARGUMENT"),
    ValueError("input ESSAY must hold exactly one string"),
])
def test_request_errors_are_not_transient(exc):
    assert not _is_transient(exc)
