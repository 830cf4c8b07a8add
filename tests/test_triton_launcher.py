"""A real tritonserver (from nvidia-pytriton) on a tiny python-backend model, over HTTP and gRPC: the launcher
(devtools.triton_launcher) and the shared server harness (devtools.servers: ManagedServer, TritonServer).

The harness and CLI tests at the end need no Triton and start no model server: they are in the fast loop."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from devtools import triton_launcher
from devtools.servers import ServerStartError, TritonServer, TritonStartError, port_is_free

needs_triton = pytest.mark.skipif(
    not triton_launcher.is_installed(),
    reason="tritonserver binary not installed (run scripts/install_triton.sh: "
    "pip install --no-deps nvidia-pytriton==0.7.0)",
)
REPO = Path(__file__).resolve().parent.parent

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException

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


@pytest.mark.slow
@needs_triton
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


@pytest.mark.slow
@needs_triton
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


@needs_triton
def test_refuses_python_models_on_numpy2(tmp_path: Path) -> None:
    """The 2.51 python backend stub returns empty outputs under numpy 2: start() must refuse, not serve junk."""
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("this interpreter has numpy 1.x")
    repo = _write_repo(tmp_path)
    server = TritonServer(repo, log_path=tmp_path / "server.log", stub_python_env=Path(sys.prefix))
    with pytest.raises(TritonStartError, match="numpy"):
        server.start(timeout_s=30)
    assert not server.running()


# ------------------------------------------------------------------------------------------------------------
# The harness itself (no Triton): a stdlib HTTP server with a child process, as a ManagedServer
# ------------------------------------------------------------------------------------------------------------
TOY_SERVER = """
import http.server, subprocess, sys, time
delay, child_sleep = float(sys.argv[2]), sys.argv[3]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(" + child_sleep + ")"])
print("child", child.pid, flush=True)
if delay < 0:
    print("toy server: giving up before listening", flush=True)
    sys.exit(3)
time.sleep(delay)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class ToyServer:
    """Built lazily: the class body needs devtools.servers."""

    @staticmethod
    def make(tmp_path: Path, delay: float = 0.0, ignore_sigterm: bool = False):
        from devtools.servers import ManagedServer, free_port, http_ok

        script = tmp_path / "toy_server.py"
        body = TOY_SERVER
        if ignore_sigterm:
            body = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + body
        script.write_text(body)

        class _Toy(ManagedServer):
            name = "toy server"
            stop_timeout_s = 1.0

            def __init__(self):
                self.port = free_port()
                super().__init__(tmp_path / "toy.log")

            def command(self):
                return [sys.executable, str(script), str(self.port), str(delay), "60"]

            def ports(self):
                return [self.port]

            def is_ready(self, timeout_s=1.0):
                return self.running() and http_ok(f"http://127.0.0.1:{self.port}/ready", timeout_s)

            def describe(self):
                return f"GET http://127.0.0.1:{self.port}/ready"

        return _Toy()


def _child_pid(server) -> int:
    for _ in range(50):
        for line in server.log_path.read_text().splitlines():
            if line.startswith("child "):
                return int(line.split()[1])
        time.sleep(0.1)
    raise AssertionError(server.log_tail())


def _pid_alive(pid: int, grace_s: float = 5.0) -> bool:
    """Whether ``pid`` is still running ``grace_s`` after the call (a signalled process takes a moment to go)."""
    deadline = time.monotonic() + grace_s
    while _running(pid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["sigterm", "sigkill"])
def test_managed_server_starts_ready_and_stops_its_whole_group(tmp_path: Path, ignore_sigterm: bool) -> None:
    server = ToyServer.make(tmp_path, delay=0.3, ignore_sigterm=ignore_sigterm)
    with server:
        assert server.is_ready() and server.running()
        assert not port_is_free(server.port)
        child = _child_pid(server)
        assert _running(child)
        assert server.start() is server  # starting a running server is a no-op
    assert not server.running() and not server.is_ready()
    assert server.process.returncode is not None
    assert not _pid_alive(child), "the server's child outlived stop()"
    assert port_is_free(server.port)
    assert server.stop() == server.process.returncode  # a second stop is a no-op


def test_managed_server_exit_before_ready_reports_the_log_tail(tmp_path: Path) -> None:
    server = ToyServer.make(tmp_path, delay=-1)
    with pytest.raises(ServerStartError) as info:
        server.start(timeout_s=30)
    msg = str(info.value)
    assert "exited with code 3" in msg and "last lines of the server log" in msg
    assert "giving up before listening" in msg
    assert not server.running()


def test_managed_server_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    server = ToyServer.make(tmp_path, delay=30)
    with pytest.raises(ServerStartError, match="not ready after 1 s") as info:
        server.start(timeout_s=1)
    assert "last lines of the server log" in str(info.value)
    assert not server.running()
    assert issubclass(TritonStartError, ServerStartError)


def test_busy_port_is_refused(tmp_path: Path) -> None:
    first = ToyServer.make(tmp_path)
    with first:
        second = ToyServer.make(tmp_path)
        second.port = first.port
        with pytest.raises(ServerStartError, match="already in use"):
            second.start(timeout_s=10)
        assert second.process is None


def test_launcher_cli_moved_to_devtools() -> None:
    """The launcher is a dev tool (devtools/, not shipped in the Bento); its CLI and ``essayscore triton`` work."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for cmd in ([sys.executable, "-m", "devtools.triton_launcher", "--help"],
                [sys.executable, "-m", "essayscore.cli", "triton", "--help"]):
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "--prepare-stub-env" in done.stdout and "--model-repository" in done.stdout
    assert not (REPO / "essayscore" / "triton_launcher.py").exists()
    assert triton_launcher.TritonServer is TritonServer  # the launcher's own server is the shared harness's


def test_each_bento_gets_its_own_metrics_folder_over_the_shared_model_store(tmp_path):
    """``bentoml serve`` empties $BENTOML_HOME/prometheus_multiproc_dir at start: two Bentos under one home would
    wipe each other's /metrics (seen when the load-test Bento started beside the shared one)."""
    from devtools.servers import own_bentoml_home

    shared = tmp_path / "store"
    (shared / "models" / "essayscore").mkdir(parents=True)
    first, second = own_bentoml_home(str(shared), 1), own_bentoml_home(str(shared), 2)
    assert first != second
    for home in (first, second):
        assert (home / "models").resolve() == (shared / "models").resolve()
        assert (home / "models" / "essayscore").is_dir()
        assert not (home / "prometheus_multiproc_dir").exists()
