"""Start a real Triton Inference Server (CPU) on a model repository.

The server binary comes from the ``nvidia-pytriton`` wheel (server 2.51), installed with ``--no-deps`` by
``scripts/install_triton.sh`` because the wheel pins ``numpy<2``. Only its bundled ``tritonserver`` tree and the
shared libraries in ``nvidia_pytriton.libs`` are used; the ``pytriton`` Python package itself is never imported.

Library use::

    with TritonServer(Path("model_repository")) as server:
        client = tritonclient.http.InferenceServerClient(server.http_url)
        ...

Command line (foreground until Ctrl-C / SIGTERM)::

    python -m essayscore.triton_launcher --model-repository model_repository --http-port 18000

How the server is laid out and started (see docs / machine recipes):

* ``pytriton/tritonserver`` is copied once to ``settings.cache_dir/tritonserver`` and the python-backend stub
  built for the running interpreter (``python_backend_stubs/<X.Y>/triton_python_backend_stub``) is copied into
  its ``backends/python/``. A stamp file records what was copied, so a new wheel or interpreter re-lays it out.
* ``LD_LIBRARY_PATH`` gets ``nvidia_pytriton.libs`` (the copied binaries lose their relative RPATH) and the
  interpreter's ``LIBDIR`` (otherwise the stub loads the system ``libpython``, which does not match a pyenv
  interpreter's stdlib). ``PATH`` starts with ``<sys.prefix>/bin``: the stub ignores ``PYTHONPATH`` and finds its
  Python by looking up ``python3`` on ``PATH``, so the venv's interpreter (and its site-packages) must win.
* The server runs in its own session / process group, so :meth:`TritonServer.stop` also reaches the python
  backend stub processes.

numpy 2 and the python backend: the stub of server 2.51 is built against the numpy 1 ABI. Under numpy 2 its
output tensors reach the client EMPTY (right shape, zero bytes, no error) and BYTES inputs arrive corrupted.
So python-backend models run on a small "stub env" (``settings.cache_dir/triton-python-env``): a venv of the
same base interpreter holding only ``numpy==1.26.4`` and a ``.pth`` that chains to the project venv's
site-packages, so ``model.py`` still imports everything else from the project venv. ``scripts/install_triton.sh``
creates it (``python -m essayscore.triton_launcher --prepare-stub-env``). :meth:`TritonServer.start` refuses to
start python-backend models on a numpy-2 interpreter rather than serve empty answers.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

from essayscore.settings import get_settings

HOST = "127.0.0.1"
INSTALL_HINT = "install it with: scripts/install_triton.sh  (pip install --no-deps nvidia-pytriton==0.7.0)"
_LAYOUT_STAMP = ".essayscore-layout.json"
STUB_NUMPY = "numpy==1.26.4"  # last numpy 1.x; the server 2.51 python backend stub needs the numpy 1 ABI
_LAYOUT_LOCK = threading.Lock()


class TritonNotInstalledError(RuntimeError):
    """The ``nvidia-pytriton`` wheel (which carries the tritonserver binary) is not installed."""


class TritonStartError(RuntimeError):
    """The server exited or did not become ready in time. The message ends with the tail of its log."""


# --------------------------------------------------------------------------------------------------
# Locating the installed server
# --------------------------------------------------------------------------------------------------
def _pytriton_dir() -> Optional[Path]:
    # find_spec does not execute pytriton/__init__.py (which would import numpy<2-era code).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_server_source() -> Optional[Path]:
    """The ``pytriton/tritonserver`` folder of the installed wheel, or None when it is not installed."""
    pkg = _pytriton_dir()
    if pkg is None:
        return None
    src = pkg / "tritonserver"
    return src if (src / "bin" / "tritonserver").is_file() else None


def is_installed() -> bool:
    """Whether the tritonserver binary and a python-backend stub for this interpreter are available."""
    src = find_server_source()
    return src is not None and _stub_source(src).is_file()


def _stub_source(src: Path) -> Path:
    return src / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / (
        "triton_python_backend_stub"
    )


def _libs_dir(src: Path) -> Path:
    # site-packages/pytriton/tritonserver -> site-packages/nvidia_pytriton.libs
    return src.parent.parent / "nvidia_pytriton.libs"


def _wheel_version() -> str:
    try:
        from importlib.metadata import version

        return version("nvidia-pytriton")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def prepare_server_tree(dest: Optional[Path] = None) -> Path:
    """Lay out a writable server tree (binary, backends, caches, the stub for this Python) once; return it.

    Safe against concurrent callers: the tree is built in a temporary sibling folder and renamed into place.
    """
    src = find_server_source()
    if src is None:
        raise TritonNotInstalledError(f"tritonserver binary not found (nvidia-pytriton is not installed); {INSTALL_HINT}")
    stub = _stub_source(src)
    if not stub.is_file():
        raise TritonNotInstalledError(
            f"nvidia-pytriton {_wheel_version()} has no python backend stub for Python "
            f"{sys.version_info.major}.{sys.version_info.minor} (looked for {stub})"
        )
    dest = Path(dest) if dest is not None else get_settings().cache_dir / "tritonserver"
    stamp = {
        "source": str(src),
        "wheel_version": _wheel_version(),
        "binary_size": (src / "bin" / "tritonserver").stat().st_size,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "stub_size": stub.stat().st_size,
    }
    with _LAYOUT_LOCK:
        try:
            if json.loads((dest / _LAYOUT_STAMP).read_text()) == stamp:
                return dest
        except (OSError, ValueError):
            pass
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tritonserver-", dir=dest.parent))
        try:
            tree = tmp / "tree"
            shutil.copytree(src, tree, symlinks=True, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
            (tree / "backends" / "python").mkdir(parents=True, exist_ok=True)
            (tree / "caches").mkdir(exist_ok=True)
            stub_dst = tree / "backends" / "python" / "triton_python_backend_stub"
            shutil.copy2(stub, stub_dst)
            for exe in (stub_dst, tree / "bin" / "tritonserver"):
                exe.chmod(exe.stat().st_mode | 0o755)
            (tree / _LAYOUT_STAMP).write_text(json.dumps(stamp, indent=2))
            if dest.exists():
                # An outdated (or half-made) tree: move it aside first; running servers keep their open inodes.
                old = tmp / "old"
                try:
                    os.rename(dest, old)
                except FileNotFoundError:
                    pass
            try:
                os.rename(tree, dest)
            except OSError:
                # Another process won the race; use its tree if it is complete.
                if not (dest / _LAYOUT_STAMP).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def server_environment(
    src: Optional[Path] = None, base: Optional[dict] = None, python_prefix: Optional[Path] = None
) -> dict:
    """Environment for the tritonserver process (LD_LIBRARY_PATH and PATH as the recipe needs).

    ``python_prefix``: the environment whose ``bin/python3`` the python backend stub runs (default sys.prefix).
    """
    src = src or find_server_source()
    if src is None:
        raise TritonNotInstalledError(f"tritonserver binary not found; {INSTALL_HINT}")
    env = dict(os.environ if base is None else base)
    libdirs = [str(_libs_dir(src))]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        libdirs.append(str(libdir))
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs)
    prefix = Path(python_prefix) if python_prefix is not None else Path(sys.prefix)
    env["PATH"] = os.pathsep.join([str(prefix / "bin")] + ([env["PATH"]] if env.get("PATH") else []))
    return env


def free_port(exclude: Sequence[int] = ()) -> int:
    """A currently free TCP port on 127.0.0.1 (chosen by the kernel, from the ephemeral range)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port
    raise RuntimeError("could not find a free port")


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


def _tail(path: Optional[Path], lines: int = 40) -> str:
    if path is None:
        return "(server output was not captured to a file)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(could not read server log {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


# --------------------------------------------------------------------------------------------------
# The Python the python-backend stub runs on
# --------------------------------------------------------------------------------------------------
def default_stub_env() -> Path:
    return get_settings().cache_dir / "triton-python-env"


def _site_packages(prefix: Path) -> Path:
    return Path(prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def prepare_stub_env(dest: Optional[Path] = None, numpy_spec: str = STUB_NUMPY, quiet: bool = True) -> Path:
    """Create (once) a venv for the python backend stub: numpy 1.x first, then the project venv's packages.

    Needs a package registry (or pip cache) the first time, for ``numpy_spec``. Idempotent.
    """
    dest = Path(dest) if dest is not None else default_stub_env()
    site = _site_packages(dest)
    chain = site / "zz_essayscore_project_venv.pth"
    project_site = sysconfig.get_paths()["purelib"]
    chain_line = f"import site; site.addsitedir({project_site!r})\n"
    stamp = dest / ".essayscore-stub-env.json"
    want = {"numpy": numpy_spec, "project_site": project_site, "base": sys.base_prefix}
    try:
        if json.loads(stamp.read_text()) == want and (dest / "bin" / "python3").exists():
            return dest
    except (OSError, ValueError):
        pass
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base_python, "-m", "venv", "--without-pip", "--clear", str(dest)], check=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade", "--target", str(site), numpy_spec]
    if quiet:
        cmd.insert(4, "-q")
    subprocess.run(cmd, check=True)
    # Appended after the env's own site-packages, so its numpy wins and everything else comes from the project.
    chain.write_text(chain_line)
    stamp.write_text(json.dumps(want, indent=2))
    return dest


def _numpy_version_seen_by(env: dict) -> Optional[str]:
    """numpy version of the ``python3`` that the stub will find on PATH (None if numpy is not importable)."""
    python3 = shutil.which("python3", path=env.get("PATH"))
    if python3 is None:
        return None
    res = subprocess.run(
        [python3, "-c", "import numpy; print(numpy.__version__)"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    return res.stdout.strip() if res.returncode == 0 else None


def uses_python_backend(model_repository: Path) -> bool:
    """Whether any model in the repository runs on the python backend."""
    repo = Path(model_repository)
    for cfg in repo.glob("*/config.pbtxt"):
        text = cfg.read_text(errors="replace")
        if '"python"' in text and ("backend" in text or "platform" in text):
            return True
    return any(repo.glob("*/*/model.py"))


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------
class TritonServer:
    """A tritonserver process serving ``model_repository`` on 127.0.0.1.

    ``http_url`` / ``grpc_url`` are ``host:port`` strings, the form ``tritonclient`` (and
    ``settings.triton_url``) expects. Ports left as None are picked free at construction time.
    ``log_path`` None writes the server log to a temporary file (kept after stop, for post-mortems);
    ``stream_output=True`` lets the server write to this process's stdout/stderr instead (used by ``main``).
    ``stub_python_env``: the environment the python backend stub runs on; default: the stub env
    (:func:`prepare_stub_env`) when it exists, else this interpreter's ``sys.prefix``.
    ``check_numpy``: refuse to start python-backend models when that environment has numpy >= 2 (see module doc).
    """

    def __init__(
        self,
        model_repository: Path,
        http_port: Optional[int] = None,
        grpc_port: Optional[int] = None,
        metrics_port: Optional[int] = None,
        log_path: Optional[Path] = None,
        extra_args: Sequence[str] = (),
        *,
        stream_output: bool = False,
        stub_python_env: Optional[Path] = None,
        check_numpy: bool = True,
    ) -> None:
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
        self.stream_output = stream_output
        if log_path is None and not stream_output:
            fd, name = tempfile.mkstemp(prefix=f"tritonserver-{self.http_port}-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path: Optional[Path] = Path(log_path) if log_path is not None else None
        self.extra_args = list(extra_args)
        if stub_python_env is None:
            stub_python_env = default_stub_env() if (default_stub_env() / "bin" / "python3").exists() else Path(sys.prefix)
        self.stub_python_env = Path(stub_python_env)
        self.check_numpy = check_numpy
        self.tree: Optional[Path] = None
        self.process: Optional[subprocess.Popen] = None
        self._log_file = None
        self._pgid: Optional[int] = None

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

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    # -- lifecycle --------------------------------------------------------------------------------
    def command(self) -> list[str]:
        if self.tree is None:
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
            *self.extra_args,
        ]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        """GET /v2/health/ready answers 200."""
        if not self.running():
            return False
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=timeout_s) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def start(self, timeout_s: float = 120) -> "TritonServer":
        """Start the server and wait until it is ready; raise :class:`TritonStartError` if it is not."""
        if self.running():
            return self
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository not found: {self.model_repository}")
        busy = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if not port_is_free(p)]
        if busy:
            raise TritonStartError(f"port(s) {busy} on {HOST} are already in use")
        cmd = self.command()
        env = server_environment(python_prefix=self.stub_python_env)
        if self.check_numpy and uses_python_backend(self.model_repository):
            np_version = _numpy_version_seen_by(env)
            if np_version is not None and int(np_version.split(".")[0]) >= 2:
                raise TritonStartError(
                    f"the python backend stub would run on numpy {np_version} ({self.stub_python_env}); the "
                    "tritonserver 2.51 stub needs numpy 1.x (under numpy 2 it returns empty outputs and corrupts "
                    "BYTES inputs). Create the stub env with `python -m essayscore.triton_launcher "
                    "--prepare-stub-env` (or scripts/install_triton.sh), or pass stub_python_env=<venv with numpy<2>."
                )
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
            out = err = self._log_file
        else:
            out = err = None
        self.process = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # own session + process group: stop() reaches the backend stubs too
            cwd=str(self.tree),
        )
        self._pgid = self.process.pid
        atexit.register(self.stop)

        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                self._cleanup_after_exit()
                raise TritonStartError(
                    f"tritonserver exited with code {code} before becoming ready "
                    f"(model repository {self.model_repository}; log {self.log_path}).\n"
                    f"--- last lines of the server log ---\n{_tail(self.log_path)}"
                )
            if self.is_ready(timeout_s=1.0):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TritonStartError(
                    f"tritonserver was not ready after {timeout_s:.0f} s "
                    f"(GET http://{self.http_url}/v2/health/ready; log {self.log_path}).\n"
                    f"--- last lines of the server log ---\n{_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def stop(self, timeout_s: float = 20) -> Optional[int]:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``. Returns the exit code; safe to repeat."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
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
        # The server is gone; kill whatever of its group is left (python backend stubs that outlived it).
        self._signal_group(signal.SIGKILL)
        self._pgid = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        try:
            atexit.unregister(self.stop)
        except Exception:  # pragma: no cover
            pass

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"TritonServer({self.model_repository}, http={self.http_url}, grpc={self.grpc_url}, {state})"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m essayscore.triton_launcher",
        description="Run a CPU Triton Inference Server (from nvidia-pytriton) on a model repository, "
        "in the foreground until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--model-repository", type=Path, default=settings.model_repository)
    parser.add_argument("--http-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--grpc-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--metrics-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--log-path", type=Path, default=None, help="default: server output goes to this terminal")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for readiness")
    parser.add_argument(
        "--stub-python-env", type=Path, default=None,
        help="environment for the python backend stub (default: the stub env if prepared, else this venv)",
    )
    parser.add_argument(
        "--prepare-stub-env", action="store_true",
        help=f"create the python backend stub env ({STUB_NUMPY} + this venv's packages) and the server tree, then exit",
    )
    parser.add_argument(
        "extra", nargs="*", help="extra tritonserver arguments, after '--' (e.g. -- --log-verbose=1)"
    )
    args = parser.parse_args(argv)

    if args.prepare_stub_env:
        env_dir = prepare_stub_env(args.stub_python_env)
        tree = prepare_server_tree()
        print(f"stub env: {env_dir}\nserver tree: {tree}")
        return 0

    server = TritonServer(
        args.model_repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_path=args.log_path,
        extra_args=args.extra,
        stream_output=args.log_path is None,
        stub_python_env=args.stub_python_env,
    )
    stop_requested = threading.Event()

    def _on_signal(signum, _frame):
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        server.start(timeout_s=args.timeout)
    except (TritonStartError, TritonNotInstalledError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        server.stop()
        return 1
    print(
        f"tritonserver ready: http={server.http_url} grpc={server.grpc_url} metrics={server.metrics_url} "
        f"pid={server.pid} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop_requested.is_set() and server.running():
            stop_requested.wait(0.5)
    finally:
        code = server.stop()
    if not stop_requested.is_set():
        print(f"tritonserver exited on its own with code {code}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
