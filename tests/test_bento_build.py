"""`bentoml build` works offline from this repository and bundles the pinned model version, and nothing else: no
training code, no tests, no development tools (devtools/, the Triton launcher). One build for the module."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from essayscore import artifacts

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(trained_artifact):
    """(version, tag, `bentoml get` JSON, the bento's folder in the session's BentoML store)."""
    version = artifacts.verify(trained_artifact)["version"]
    env = os.environ | {"ESSAYSCORE_MODEL_TAG": f"essayscore:{version}"}
    bentoml = [sys.executable, "-m", "bentoml"]
    done = subprocess.run([*bentoml, "build", "--output", "tag"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    tag = done.stdout.strip().splitlines()[-1].split("__tag__:")[-1].strip()
    assert tag.startswith("essayscore:"), done.stdout
    info = subprocess.run([*bentoml, "get", tag, "-o", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    bento = json.loads(info.stdout)
    bento_dir = Path(os.environ["BENTOML_HOME"]) / "bentos" / tag.replace(":", "/")
    return version, tag, bento, bento_dir


def test_bentoml_build_offline(built):
    version, tag, bento, bento_dir = built
    # BentoML 1.4 records the service's model by reference (per service); containerize resolves it from the store
    manifest = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    service_models = [m["tag"] for service in manifest["services"] for m in service["models"]]
    assert service_models == [f"essayscore:{version}"], (service_models, bento.get("models"))
    assert (bento_dir / "src" / "service.py").is_file()
    assert not (bento_dir / "src" / "training").exists() and not (bento_dir / "src" / "tests").exists()


def test_bento_ships_no_dev_tools(built):
    """The Triton launcher (which pip-installs a numpy-1 stub env) and the test/load-test server harness are
    development tools in devtools/: the Bento (``/essayscore/**/*.py``) must not carry them."""
    src = built[3] / "src"
    files = [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()]
    assert "service.py" in files and any(f.startswith("essayscore/") for f in files), files
    assert not [f for f in files if "triton_launcher" in f], files
    assert not [f for f in files if f.split("/")[0] == "devtools"], files
    assert not (src / "devtools").exists()
