"""Start a real Triton Inference Server (CPU) on a model repository: a development tool, not shipped in the Bento.

The server binary comes from the ``nvidia-pytriton`` wheel (server 2.51), installed with ``--no-deps`` by
``scripts/install_triton.sh`` because the wheel pins ``numpy<2``. Only its bundled ``tritonserver`` tree and the
shared libraries in ``nvidia_pytriton.libs`` are used; the ``pytriton`` Python package itself is never imported.

This module lays out the server tree and prepares the python-backend stub env; the server process itself is
:class:`devtools.servers.TritonServer` (the harness the tests, load tests and benchmarks share), re-exported here.

Library use::

    from devtools.servers import TritonServer

    with TritonServer(Path("model_repository")) as server:
        client = tritonclient.http.InferenceServerClient(server.http_url)
        ...

Command line (foreground until Ctrl-C / SIGTERM; also ``essayscore triton ...``)::

    python -m devtools.triton_launcher --model-repository model_repository --http-port 18000
    python -m devtools.triton_launcher --prepare-stub-env

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
creates it (``python -m devtools.triton_launcher --prepare-stub-env``). :meth:`TritonServer.start` refuses to
start python-backend models on a numpy-2 interpreter rather than serve empty answers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from devtools.servers import HOST, TritonServer, TritonStartError, free_port, port_is_free  # noqa: F401 (API)
from essayscore.settings import get_settings

INSTALL_HINT = "install it with: scripts/install_triton.sh  (pip install --no-deps nvidia-pytriton==0.7.0)"
_LAYOUT_STAMP = ".essayscore-layout.json"
STUB_NUMPY = "numpy==1.26.4"  # last numpy 1.x; the server 2.51 python backend stub needs the numpy 1 ABI
_LAYOUT_LOCK = threading.Lock()


class TritonNotInstalledError(RuntimeError):
    """The ``nvidia-pytriton`` wheel (which carries the tritonserver binary) is not installed."""


# --------------------------------------------------------------------------------------------------
# Locating the installed server
# --------------------------------------------------------------------------------------------------
def _pytriton_dir() -> Path | None:
    # find_spec does not execute pytriton/__init__.py (which would import numpy<2-era code).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_server_source() -> Path | None:
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
    except Exception:  # noqa: BLE001 - metadata missing or unreadable: only a stamp value  # pragma: no cover
        return "unknown"


def prepare_server_tree(dest: Path | None = None) -> Path:
    """Lay out a writable server tree (binary, backends, caches, the stub for this Python) once; return it.

    Safe against concurrent callers: the tree is built in a temporary sibling folder and renamed into place.
    """
    src = find_server_source()
    if src is None:
        raise TritonNotInstalledError(
            f"tritonserver binary not found (nvidia-pytriton is not installed); {INSTALL_HINT}")
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
            shutil.copytree(src, tree, symlinks=True,
                            ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
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
    src: Path | None = None, base: dict | None = None, python_prefix: Path | None = None
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


# --------------------------------------------------------------------------------------------------
# The Python the python-backend stub runs on
# --------------------------------------------------------------------------------------------------
def default_stub_env() -> Path:
    return get_settings().cache_dir / "triton-python-env"


def _site_packages(prefix: Path) -> Path:
    return Path(prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def prepare_stub_env(dest: Path | None = None, numpy_spec: str = STUB_NUMPY, quiet: bool = True) -> Path:
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


def numpy_version_seen_by(env: dict) -> str | None:
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


_numpy_version_seen_by = numpy_version_seen_by  # the name before the move to devtools/


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m devtools.triton_launcher",
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
