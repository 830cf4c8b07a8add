"""`bentoml build` works offline from this repository and bundles the pinned model version."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from essayscore import artifacts

REPO = Path(__file__).resolve().parent.parent


def test_bentoml_build_offline(trained_artifact):
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
    # BentoML 1.4 records the service's model by reference (per service); containerize resolves it from the store
    manifest = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    service_models = [m["tag"] for service in manifest["services"] for m in service["models"]]
    assert service_models == [f"essayscore:{version}"], (service_models, bento.get("models"))
    assert (bento_dir / "src" / "service.py").is_file()
    assert not (bento_dir / "src" / "training").exists() and not (bento_dir / "src" / "tests").exists()
