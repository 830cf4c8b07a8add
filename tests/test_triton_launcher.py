"""A real tritonserver (from nvidia-pytriton) on a tiny python-backend model, over HTTP and gRPC."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from essayscore import triton_launcher
from essayscore.triton_launcher import TritonServer, TritonStartError, port_is_free

pytestmark = pytest.mark.skipif(
    not triton_launcher.is_installed(),
    reason="tritonserver binary not installed (run scripts/install_triton.sh: "
    "pip install --no-deps nvidia-pytriton==0.7.0)",
)

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "toy"

CONFIG = """
name: "toy"
backend: "python"
max_batch_size: 8
input [
  { name: "X", data_type: TYPE_FP32, dims: [ 3 ] },
  { name: "TEXT", data_type: TYPE_STRING, dims: [ 1 ] }
]
output [
  { name: "Y", data_type: TYPE_FP32, dims: [ 3 ] },
  { name: "NBYTES", data_type: TYPE_INT64, dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

MODEL_PY = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            nbytes = np.array([[len(v)] for v in text.reshape(-1)], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("Y", (2.0 * x).astype(np.float32)),
                pb_utils.Tensor("NBYTES", nbytes),
            ]))
        return responses
'''


@pytest.fixture(scope="module")
def stub_env() -> Path:
    """The numpy-1 env the python backend stub needs (created once; needs the registry or pip cache)."""
    try:
        return triton_launcher.prepare_stub_env()
    except Exception as exc:  # pragma: no cover - offline without a cached numpy 1.26 wheel
        pytest.skip(f"could not prepare the python backend stub env ({triton_launcher.STUB_NUMPY}): {exc}")


def _write_repo(root: Path) -> Path:
    repo = root / "model_repository"
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "config.pbtxt").write_text(textwrap.dedent(CONFIG))
    (repo / MODEL / "1" / "model.py").write_text(textwrap.dedent(MODEL_PY))
    return repo


def _inputs(module, x: np.ndarray, texts: list[bytes]):
    text = np.array(texts, dtype=np.object_).reshape(-1, 1)
    ix = module.InferInput("X", list(x.shape), "FP32")
    ix.set_data_from_numpy(x)
    it = module.InferInput("TEXT", list(text.shape), "BYTES")
    it.set_data_from_numpy(text)
    return [ix, it], [module.InferRequestedOutput("Y"), module.InferRequestedOutput("NBYTES")]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_real_server_http_grpc_errors_and_stop(tmp_path: Path, stub_env: Path) -> None:
    repo = _write_repo(tmp_path)
    server = TritonServer(repo, log_path=tmp_path / "server.log", stub_python_env=stub_env)
    http = grpc = None
    t0 = time.monotonic()
    server.start(timeout_s=60)
    try:
        start_s = time.monotonic() - t0
        assert server.is_ready()
        assert start_s < 60

        x = np.array([[1.0, -2.5, 3.25], [0.0, 0.5, np.float32(1e6)]], dtype=np.float32)
        texts = [b"hello", "caf\u00e9 \u2713".encode()]  # 5 bytes; 9 bytes of UTF-8

        # HTTP
        http = httpclient.InferenceServerClient(server.http_url)
        assert http.is_server_live() and http.is_model_ready(MODEL)
        inputs, outputs = _inputs(httpclient, x, texts)
        res = http.infer(MODEL, inputs, outputs=outputs)
        np.testing.assert_array_equal(res.as_numpy("Y"), 2 * x)
        np.testing.assert_array_equal(res.as_numpy("NBYTES"), [[5], [9]])

        # gRPC
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        assert grpc.is_server_ready()
        inputs, outputs = _inputs(grpcclient, x[:1], texts[:1])
        res = grpc.infer(MODEL, inputs, outputs=outputs)
        np.testing.assert_array_equal(res.as_numpy("Y"), 2 * x[:1])
        np.testing.assert_array_equal(res.as_numpy("NBYTES"), [[5]])

        # Malformed: wrong dtype (INT32 where FP32 is declared) -> a clear error, not a crash.
        bad = httpclient.InferInput("X", [1, 3], "INT32")
        bad.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.int32))
        good_text = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        good_text.set_data_from_numpy(np.array([[b"a"]], dtype=np.object_))
        with pytest.raises(InferenceServerException) as exc_info:
            http.infer(MODEL, [bad, good_text])
        msg = str(exc_info.value).lower()
        assert "data-type" in msg and "'x'" in msg and "fp32" in msg, msg

        # Malformed: unknown input name over gRPC.
        wrong = grpcclient.InferInput("NOT_AN_INPUT", [1, 3], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        with pytest.raises(InferenceServerException) as exc_info:
            grpc.infer(MODEL, [wrong])
        assert "not_an_input" in str(exc_info.value).lower(), str(exc_info.value)

        # Still serving afterwards.
        inputs, outputs = _inputs(httpclient, x, texts)
        np.testing.assert_array_equal(http.infer(MODEL, inputs, outputs=outputs).as_numpy("Y"), 2 * x)
    finally:
        # Open keep-alive connections make tritonserver wait up to --exit-timeout-secs (30) on SIGTERM.
        for client in (http, grpc):
            if client is not None:
                client.close()
        pgid = server.pid
        code = server.stop()

    assert code is not None
    assert not server.is_ready()
    assert server.stop() == code  # second stop is a no-op
    assert not _group_alive(pgid), "server process group (incl. python backend stubs) outlived stop()"
    for port in (server.http_port, server.grpc_port, server.metrics_port):
        assert port_is_free(port), f"port {port} still bound after stop()"


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "no_such_backend"\n')
    server = TritonServer(repo, log_path=tmp_path / "server.log")
    with pytest.raises(TritonStartError) as exc_info:
        server.start(timeout_s=60)
    msg = str(exc_info.value)
    assert "last lines of the server log" in msg
    assert "broken" in msg
    assert not server.running()
    server.stop()


def test_refuses_python_models_on_numpy2(tmp_path: Path) -> None:
    """The 2.51 python backend stub returns empty outputs under numpy 2: start() must refuse, not serve junk."""
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("this interpreter has numpy 1.x")
    repo = _write_repo(tmp_path)
    server = TritonServer(repo, log_path=tmp_path / "server.log", stub_python_env=Path(sys.prefix))
    with pytest.raises(TritonStartError, match="numpy"):
        server.start(timeout_s=30)
    assert not server.running()
