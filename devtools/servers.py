"""Managed local servers for the tests, the load-test runner and the benchmarks.

One harness, :class:`ManagedServer`: free ports on 127.0.0.1, the subprocess in its own session / process group
(so :meth:`~ManagedServer.stop` also reaches its children, e.g. Triton's python backend stubs or BentoML's
workers), readiness polled with a timeout (the error carries the tail of the server log), SIGTERM then SIGKILL on
stop, and use as a context manager. Two servers are built on it:

* :class:`BentoServer`: ``bentoml serve service:EssayScoreService`` on a model version (embedded or Triton runtime,
  chosen by environment variables);
* :class:`TritonServer`: a real ``tritonserver`` (from nvidia-pytriton) on a model repository; the server tree and
  the python-backend stub env it needs come from :mod:`devtools.triton_launcher`.

::

    with TritonServer(Path("model_repository")) as triton, \\
            BentoServer(artifact, ESSAYSCORE_RUNTIME="triton", ESSAYSCORE_TRITON_URL=triton.http_url) as bento:
        httpx.post(bento.url + "/score", json={"essay": "..."})

Only the standard library is imported at module level.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time. The message ends with the tail of its log."""


class TritonStartError(ServerStartError):
    """tritonserver exited, did not become ready in time, or would serve wrong answers (numpy 2 stub)."""


# --------------------------------------------------------------------------------------------------
# Ports and logs
# --------------------------------------------------------------------------------------------------
def free_port(exclude: Sequence[int] = ()) -> int:
    """A currently free TCP port on 127.0.0.1 (chosen by the kernel, from the ephemeral range)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port
    raise RuntimeError("could not find a free port")


def free_ports(n: int, taken: Sequence[int | None] = ()) -> list[int]:
    """``n`` distinct free ports, none of them in ``taken``."""
    used = [p for p in taken if p is not None]
    out: list[int] = []
    for _ in range(n):
        out.append(free_port([*used, *out]))
    return out


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port now (SO_REUSEADDR, as tritonserver binds: sockets of
    closed connections in TIME_WAIT do not count; a live listener does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a server log (or why there are none)."""
    if path is None:
        return "(server output was not captured to a file)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(could not read server log {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """GET ``url`` answers 200 (any error, refusal or other status: False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------------------------------
class ManagedServer:
    """A server subprocess on 127.0.0.1, in its own process group, started and stopped on request.

    Subclasses give :meth:`command` and :meth:`is_ready` (and, if they need them, :meth:`environment`,
    :meth:`working_dir`, :meth:`ports`, :meth:`check_can_start`, :meth:`describe`). ``log_path`` None writes the
    server's output to a temporary file (kept after stop, for post-mortems); ``stream_output=True`` leaves it on
    this process's stdout/stderr instead.
    """

    name = "server"
    start_error: type[ServerStartError] = ServerStartError
    ready_timeout_s: float = 120.0
    poll_interval_s: float = 0.2
    stop_timeout_s: float = 20.0
    tail_lines: int = 40

    def __init__(self, log_path: Path | None = None, *, stream_output: bool = False,
                 log_prefix: str | None = None) -> None:
        self.stream_output = stream_output
        if log_path is None and not stream_output:
            fd, name = tempfile.mkstemp(prefix=f"{log_prefix or self.name}-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.process: subprocess.Popen | None = None
        self._log_file = None
        self._pgid: int | None = None

    # -- what subclasses define ------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        raise NotImplementedError

    def environment(self) -> dict | None:
        """The server's environment (None: this process's)."""
        return None

    def working_dir(self) -> Path | None:
        return None

    def ports(self) -> list[int]:
        """Ports the server will listen on: start() refuses to start when one is taken."""
        return []

    def check_can_start(self) -> None:
        """Raise (``start_error``, FileNotFoundError...) when the server cannot start; called by start()."""

    def describe(self) -> str:
        """Where readiness is checked, for error messages."""
        return ""

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, n: int | None = None) -> str:
        return log_tail(self.log_path, n or self.tail_lines)

    def start(self, timeout_s: float | None = None):
        """Start the server and wait until it is ready; raise ``start_error`` (a :class:`ServerStartError`) with
        the tail of its log if it exits first or is not ready within ``timeout_s``. Returns ``self``."""
        if self.running():
            return self
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        self.check_can_start()
        busy = [p for p in self.ports() if not port_is_free(p)]
        if busy:
            raise self.start_error(f"port(s) {busy} on {HOST} are already in use")
        cmd = self.command()
        env = self.environment()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
            out = err = self._log_file
        else:
            out = err = None
        cwd = self.working_dir()
        self.process = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,  # own session + process group: stop() reaches the children too
            cwd=None if cwd is None else str(cwd),
        )
        self._pgid = self.process.pid
        atexit.register(self.stop)

        where = self.describe()
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                self._cleanup_after_exit()
                raise self.start_error(
                    f"{self.name} exited with code {code} before becoming ready ({where}; log {self.log_path}).\n"
                    f"--- last lines of the server log ---\n{self.log_tail()}"
                )
            if self.is_ready(timeout_s=1.0):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise self.start_error(
                    f"{self.name} was not ready after {timeout_s:.0f} s ({where}; log {self.log_path}).\n"
                    f"--- last lines of the server log ---\n{self.log_tail()}"
                )
            time.sleep(self.poll_interval_s)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``. Returns the exit code; safe to repeat."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(timeout=10)
        self._cleanup_after_exit()
        return proc.returncode

    def _signal_group(self, sig: int) -> None:
        if self._pgid is None:
            return
        try:
            os.killpg(self._pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _cleanup_after_exit(self) -> None:
        # The leader is gone; kill whatever of its group is left (children that outlived it).
        self._signal_group(signal.SIGKILL)
        self._pgid = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        atexit.unregister(self.stop)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()}, {'running' if self.running() else 'stopped'})"


# --------------------------------------------------------------------------------------------------
# The Bento
# --------------------------------------------------------------------------------------------------
def own_bentoml_home(shared: str | None, port: int) -> Path:
    """A BENTOML_HOME of this server's own that sees the shared model store (``models`` is a link to it).

    ``bentoml serve`` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, so two Bentos under one
    home wipe each other's /metrics; each server here gets its own home and so its own metrics folder."""
    store = Path(shared or Path.home() / "bentoml").expanduser()
    (store / "models").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=f"bentoml-home-{port}-"))
    (home / "models").symlink_to(store / "models", target_is_directory=True)
    atexit.register(shutil.rmtree, home, True)  # removes the link, never the store it points to
    return home


class ModelServer(ManagedServer):
    """A server of this project's model (the Bento, the gRPC sidecar) on one free port of 127.0.0.1.

    The environment: ``essayscore:<version>`` from the BentoML store (``ESSAYSCORE_MODEL_TAG``; pass a folder path
    instead to load the folder directly), single-threaded (``OMP_NUM_THREADS=1``; pass None for production
    threading), one worker (``ESSAYSCORE_WORKERS=1`` unless set; None for the service's default); ``env``
    overrides (``ESSAYSCORE_RUNTIME``, ``ESSAYSCORE_TRITON_URL``...), None leaves a variable unset."""

    log_name = "model"

    def __init__(self, artifact_dir: Path, port: int | None, log_path: Path | None, env: dict[str, str | None]):
        from essayscore.artifacts import verify

        self.artifact_dir = Path(artifact_dir)
        self.version = verify(self.artifact_dir)["version"]
        self.port = int(port) if port is not None else free_port()
        # one worker unless the caller's environment or ``env`` says otherwise (None: the service's default)
        merged = {"ESSAYSCORE_WORKERS": "1", **os.environ, "ESSAYSCORE_MODEL_TAG": f"essayscore:{self.version}",
                  "ESSAYSCORE_ARTIFACTS_DIR": str(self.artifact_dir.parent), "OMP_NUM_THREADS": "1", **env}
        self.env = {k: v for k, v in merged.items() if v is not None}  # None: leave the variable unset
        super().__init__(log_path, log_prefix=f"{self.log_name}-{self.port}")

    @property
    def runtime(self) -> str:
        return self.env.get("ESSAYSCORE_RUNTIME", "embedded")

    def environment(self) -> dict:
        return self.env

    def working_dir(self) -> Path:
        return REPO

    def ports(self) -> list[int]:
        return [self.port]


class BentoServer(ModelServer):
    """``bentoml serve service:EssayScoreService`` on 127.0.0.1 (1 worker) serving the model at ``artifact_dir``
    (environment: :class:`ModelServer`). ``service``: the service to serve, as ``module:attribute`` importable from
    the repository root (the load tests' wrappers, e.g. ``loadtests.leaky_service:EssayScoreService``).
    """

    name = "bentoml serve"
    log_name = "bento"
    ready_timeout_s = 240.0
    poll_interval_s = 0.5
    tail_lines = 60

    def __init__(self, artifact_dir: Path, *, port: int | None = None, log_path: Path | None = None,
                 service: str = "service:EssayScoreService", **env: str | None) -> None:
        self.service = service
        port = int(port) if port is not None else free_port()
        # each Bento its own BENTOML_HOME (and so its own metrics folder) over the shared model store
        env["BENTOML_HOME"] = str(own_bentoml_home(env.get("BENTOML_HOME", os.environ.get("BENTOML_HOME")), port))
        super().__init__(artifact_dir, port, log_path, env)
        self.url = f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        bentoml_bin = Path(sys.executable).parent / "bentoml"
        return [str(bentoml_bin), "serve", self.service, "--host", HOST, "--port", str(self.port)]

    def is_ready(self, timeout_s: float = 2.0) -> bool:
        return self.running() and http_ok(self.url + "/readyz", timeout_s=max(timeout_s, 2.0))

    def describe(self) -> str:
        return f"GET {self.url}/readyz, model {self.version}, runtime {self.runtime}"


# --------------------------------------------------------------------------------------------------
# Triton
# --------------------------------------------------------------------------------------------------
class TritonServer(ManagedServer):
    """A tritonserver process serving ``model_repository`` on 127.0.0.1.

    ``http_url`` / ``grpc_url`` are ``host:port`` strings, the form ``tritonclient`` (and
    ``settings.triton_url``) expects. Ports left as None are picked free at construction time.
    ``log_path`` None writes the server log to a temporary file (kept after stop, for post-mortems);
    ``stream_output=True`` lets the server write to this process's stdout/stderr instead (the launcher's CLI).
    ``stub_python_env``: the environment the python backend stub runs on; default: the stub env
    (:func:`devtools.triton_launcher.prepare_stub_env`) when it exists, else this interpreter's ``sys.prefix``.
    ``check_numpy``: refuse to start python-backend models when that environment has numpy >= 2 (see
    :mod:`devtools.triton_launcher`).
    """

    name = "tritonserver"
    start_error = TritonStartError
    ready_timeout_s = 120.0

    def __init__(
        self,
        model_repository: Path,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        *,
        stream_output: bool = False,
        stub_python_env: Path | None = None,
        check_numpy: bool = True,
    ) -> None:
        from devtools import triton_launcher as launcher

        self.model_repository = Path(model_repository).resolve()
        taken: list[int] = [p for p in (http_port, grpc_port, metrics_port) if p is not None]
        if http_port is None:
            http_port = free_port(taken)
            taken.append(http_port)
        if grpc_port is None:
            grpc_port = free_port(taken)
            taken.append(grpc_port)
        if metrics_port is None:
            metrics_port = free_port(taken)
        self.http_port, self.grpc_port, self.metrics_port = int(http_port), int(grpc_port), int(metrics_port)
        self.extra_args = list(extra_args)
        if stub_python_env is None:
            default = launcher.default_stub_env()
            stub_python_env = default if (default / "bin" / "python3").exists() else Path(sys.prefix)
        self.stub_python_env = Path(stub_python_env)
        self.check_numpy = check_numpy
        self.tree: Path | None = None
        self._env: dict | None = None
        super().__init__(log_path, stream_output=stream_output, log_prefix=f"tritonserver-{self.http_port}")

    # -- addresses --------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def url(self, protocol: str) -> str:
        """``http_url`` or ``grpc_url``."""
        return {"http": self.http_url, "grpc": self.grpc_url}[protocol]

    # -- ManagedServer ----------------------------------------------------------------------------
    def command(self) -> list[str]:
        if self.tree is None:
            from devtools.triton_launcher import prepare_server_tree

            self.tree = prepare_server_tree()
        t = self.tree
        return [
            str(t / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={t / 'backends'}",
            f"--cache-directory={t / 'caches'}",
            f"--http-address={HOST}",
            f"--http-port={self.http_port}",
            f"--grpc-address={HOST}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={HOST}",
            f"--metrics-port={self.metrics_port}",
            "--pinned-memory-pool-byte-size=0",
            "--allow-gpu-metrics=false",
            "--backend-config=python,shm-default-byte-size=4194304",
            # explicit model control with every model loaded: serves as the default mode does, and lets the
            # Bento reload a model whose python stub died (essayscore.triton_recovery)
            *([] if any(a.startswith("--model-control-mode") for a in self.extra_args)
              else ["--model-control-mode=explicit", "--load-model=*"]),
            *self.extra_args,
        ]

    def environment(self) -> dict:
        if self._env is None:
            from devtools.triton_launcher import server_environment

            self._env = server_environment(python_prefix=self.stub_python_env)
        return self._env

    def working_dir(self) -> Path | None:
        return self.tree

    def ports(self) -> list[int]:
        return [self.http_port, self.grpc_port, self.metrics_port]

    def check_can_start(self) -> None:
        from devtools.triton_launcher import numpy_version_seen_by, uses_python_backend

        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository not found: {self.model_repository}")
        if self.check_numpy and uses_python_backend(self.model_repository):
            np_version = numpy_version_seen_by(self.environment())
            if np_version is not None and int(np_version.split(".")[0]) >= 2:
                raise TritonStartError(
                    f"the python backend stub would run on numpy {np_version} ({self.stub_python_env}); the "
                    "tritonserver 2.51 stub needs numpy 1.x (under numpy 2 it returns empty outputs and corrupts "
                    "BYTES inputs). Create the stub env with `python -m devtools.triton_launcher "
                    "--prepare-stub-env` (or scripts/install_triton.sh), or pass stub_python_env=<venv with numpy<2>."
                )

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        """GET /v2/health/ready answers 200."""
        return self.running() and http_ok(f"http://{self.http_url}/v2/health/ready", timeout_s=timeout_s)

    def describe(self) -> str:
        return f"GET http://{self.http_url}/v2/health/ready, model repository {self.model_repository}"

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"TritonServer({self.model_repository}, http={self.http_url}, grpc={self.grpc_url}, {state})"


# --------------------------------------------------------------------------------------------------
# The gRPC API
# --------------------------------------------------------------------------------------------------
class GrpcServer(ModelServer):
    """``essayscore grpc-serve`` on 127.0.0.1 serving the model at ``artifact_dir`` (environment:
    :class:`ModelServer`). Ready when grpc.health.v1 says SERVING; ``wait_for="loaded"``: when the model is loaded
    (Metadata answers), whatever the health says, for a server whose runtime is meant to be down. ``target`` is
    ``host:port``, the form :class:`essayscore.grpc_api.client.EssayScoreGrpcClient` takes."""

    name = "essayscore grpc-serve"
    log_name = "grpc"
    ready_timeout_s = 180.0
    poll_interval_s = 0.5
    tail_lines = 60

    def __init__(self, artifact_dir: Path, *, port: int | None = None, log_path: Path | None = None,
                 wait_for: str = "serving", health_interval_s: float = 0.5, **env: str | None) -> None:
        self.wait_for = wait_for
        self.health_interval_s = health_interval_s
        super().__init__(artifact_dir, port, log_path, env)
        self.target = f"{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "essayscore"), "grpc-serve", "--host", HOST, "--port",
                str(self.port), "--health-interval", str(self.health_interval_s)]

    def client(self, timeout_s: float = 120.0):
        from essayscore.grpc_api.client import EssayScoreGrpcClient

        return EssayScoreGrpcClient(self.target, timeout_s=timeout_s)

    def is_ready(self, timeout_s: float = 2.0) -> bool:
        if not self.running():
            return False
        from essayscore.grpc_api.client import EssayScoreGrpcError

        with self.client(timeout_s=max(timeout_s, 2.0)) as c:
            if self.wait_for == "serving":
                return c.health() == "SERVING"
            try:
                c.metadata()
            except EssayScoreGrpcError:
                return False
            return True

    def describe(self) -> str:
        return f"grpc.health.v1 at {self.target} ({self.wait_for}), model {self.version}"
