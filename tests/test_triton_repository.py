"""The generated cpu model repository on a REAL tritonserver (2.51, from nvidia-pytriton), over HTTP and gRPC.

The repository is conftest's session ``cpu_repo_fp32`` (the session's trained artifact, with the fp32 encoder of
the run's one MiniLM export: no re-export) and one server serves it for the whole module. The ensemble's answers
must equal in-process ``EssayScorer`` scoring with the same ONNX encoder variant, and give the same half bands as
the default PyTorch-encoder scorer. Malformed requests get a Triton error, not a hang, and the server keeps
serving. ``test_steps_in_process_equal_in_process_scoring`` chains the python models' steps in process (no
server) on the repository's own files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from devtools import triton_launcher
from devtools.servers import TritonServer
from essayscore import triton_io as io

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not triton_launcher.is_installed(),
                       reason="tritonserver binary not installed (scripts/install_triton.sh)"),
]

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException

TIMEOUT_S = 60.0
N_ESSAYS = 6  # conftest's ``cases``: real essays across the band range, at least one with grammar matches


@pytest.fixture(scope="module")
def cpu_repo(cpu_repo_fp32: Path) -> Path:
    """This module's repository: the fp32 one (conftest's ``cpu_repo`` is the artifact's int8)."""
    return cpu_repo_fp32


@pytest.fixture(scope="module")
def server(cpu_repo: Path, stub_env: Path, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton-log") / "server.log"
    with TritonServer(cpu_repo, log_path=log, stub_python_env=stub_env).start(timeout_s=180) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server):
    made = {
        "http": httpclient.InferenceServerClient(server.http_url, connection_timeout=TIMEOUT_S,
                                                 network_timeout=TIMEOUT_S),
        "grpc": grpcclient.InferenceServerClient(server.grpc_url),
    }
    yield made
    for client in made.values():  # open keep-alive connections delay the server's shutdown
        client.close()


def _infer(client, inputs, outputs=None):
    kwargs = {"client_timeout": TIMEOUT_S} if isinstance(client, grpcclient.InferenceServerClient) else {}
    return client.infer(io.ENSEMBLE, inputs, outputs=outputs, **kwargs)


@pytest.fixture(scope="module")
def onnx_reference(trained_artifact: Path, cpu_repo: Path, cases):
    from essayscore.essay_scorer import EssayScorer
    from essayscore.onnx_encoder import OnnxEncoder

    encoder = OnnxEncoder.from_dir(cpu_repo / io.ENCODER / "1", variant="fp32")
    scorer = EssayScorer(trained_artifact, encoder=encoder)
    return scorer, scorer.score([e for e, _ in cases], [p for _, p in cases])


@pytest.fixture(scope="module")
def torch_reference(trained_artifact: Path, cases, onnx_reference):
    from essayscore.essay_scorer import EssayScorer

    scorer = EssayScorer(trained_artifact, extractor=onnx_reference[0].extractor)
    return scorer.score([e for e, _ in cases], [p for _, p in cases])


@pytest.fixture(scope="module")
def served(clients, cases) -> dict[str, list]:
    return {name: [io.score(client, essay, prompt, **({"client_timeout": TIMEOUT_S} if name == "grpc" else {}))
                   for essay, prompt in cases]
            for name, client in clients.items()}


# ------------------------------------------------------------------------------------------------------------
def test_generated_repository_is_consistent(cpu_repo: Path, trained_artifact: Path) -> None:
    from essayscore.artifacts import Layout, sha256_file, verify
    from training.repository import check_repository, parse_config

    assert check_repository(cpu_repo, "cpu") == []
    meta = json.loads((cpu_repo / "repository.json").read_text())
    assert meta["profile"] == "cpu"
    assert meta["artifact_version"] == verify(trained_artifact)["version"]
    assert meta["encoder"]["variant"] == "fp32"
    for rel, digest in meta["files"].items():
        assert sha256_file(cpu_repo / rel) == digest, rel
    assert "encoder/1/encoder.fp32.onnx" in meta["files"]
    assert "band_regressor/1/regressor.so" in meta["files"]
    # one tree model (the residual trees); CEFR probabilities come from postprocess, not from a classifier
    models = ("preprocess", "encoder", "assemble", "band_regressor", "postprocess")
    assert meta["models"] == [*models, io.ENSEMBLE]
    assert {p.parent.name for p in cpu_repo.glob("*/config.pbtxt")} == {*models, io.ENSEMBLE}
    for model in models:
        code = (cpu_repo / model / "1" / "model.py").read_text()
        assert "/work/" not in code and "TritonPythonModel" in code  # thin, no absolute paths
    for cfg in cpu_repo.glob("*/config.pbtxt"):
        assert str(cpu_repo) not in cfg.read_text() and "KIND_GPU" not in cfg.read_text()
    # preprocess extracts with the artifact's learned error detector (else the learned_errors columns are NaN)
    assert meta["files"]["preprocess/1/artifact/error_detector.npz"] == sha256_file(trained_artifact / Layout.DETECTOR)
    configs = {p.parent.name: parse_config(p) for p in cpu_repo.glob("*/config.pbtxt")}
    params = {k: v.string_value for k, v in configs[io.PREPROCESS].parameters.items()}
    assert params["error_detector"] == "artifact/error_detector.npz"
    # postprocess is fed the trees' output and assemble's FEATURE_VECTOR (one tensor, two consumers)
    assert [t.name for t in configs[io.POSTPROCESS].input] == [io.RAW_BAND.name, io.FEATURE_VECTOR.name]
    steps = {s.model_name: s for s in configs[io.ENSEMBLE].ensemble_scheduling.step}
    assert list(steps) == list(models)
    assert dict(steps[io.POSTPROCESS].input_map) == {io.RAW_BAND.name: io.RAW_BAND.name,
                                                     io.FEATURE_VECTOR.name: io.FEATURE_VECTOR.name}
    assert dict(steps[io.BAND_REGRESSOR].input_map) == {"input__0": io.FEATURE_VECTOR.name}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_equals_in_process_scoring(protocol, served, onnx_reference, cases) -> None:
    from essayscore.features.registry import LEARNED_FEATURES

    scorer, expected = onnx_reference
    results = served[protocol]
    learned = [scorer.model.feature_names.index(name) for name in LEARNED_FEATURES]
    n_matches = 0
    for (_essay, _prompt), got, ref in zip(cases, results, expected):
        want = ref
        assert got.ielts_band == want.ielts_band
        assert got.cefr == want.cefr
        assert got.band_interval == want.band_interval
        assert got.ielts_raw == pytest.approx(want.ielts_raw, abs=1e-4)
        assert got.length_adjustment == pytest.approx(want.length_adjustment, abs=1e-4)
        for level, p in want.cefr_probabilities.items():
            assert got.cefr_probabilities[level] == pytest.approx(p, abs=1e-4)
        assert got.model_version == scorer.version
        assert got.feature_vector.shape == ref.feature_vector.shape
        np.testing.assert_allclose(got.feature_vector, ref.feature_vector, atol=1e-4, rtol=0)
        assert np.isfinite(got.feature_vector[learned]).all()  # preprocess ran the artifact's error detector
        assert got.matches == ref.matches
        n_matches += len(got.matches)
    assert n_matches > 0, "no essay had grammar matches: the comparison of matches proved nothing"
    assert any(p is None for _, p in cases) and any(p for _, p in cases)


def test_steps_in_process_equal_in_process_scoring(cpu_repo: Path, onnx_reference, cases) -> None:
    """The python models' steps on the repository's own files (no server) compute what EssayScorer does."""
    from essayscore.artifacts import Layout
    from essayscore.triton_models.steps import AssembleStep, EncoderStep, PostprocessStep, PreprocessStep, TreesStep

    scorer, expected = onnx_reference
    folder = {model: cpu_repo / model / "1"
              for model in (io.PREPROCESS, io.ENCODER, io.ASSEMBLE, io.BAND_REGRESSOR, io.POSTPROCESS)}
    preprocess = PreprocessStep(folder[io.PREPROCESS] / "encoder",
                                detector_path=folder[io.PREPROCESS] / "artifact" / Layout.DETECTOR)
    encoder = EncoderStep(folder[io.ENCODER] / "encoder.fp32.onnx", folder[io.ENCODER])
    assemble = AssembleStep(folder[io.ASSEMBLE] / "artifact")
    trees = TreesStep(folder[io.BAND_REGRESSOR] / "regressor.so")
    postprocess = PostprocessStep(folder[io.POSTPROCESS] / "artifact", scorer.version)
    for (essay, prompt), ref in zip(cases, expected):
        t = preprocess(essay, prompt)
        embedding = encoder(t[io.INPUT_IDS.name], t[io.ATTENTION_MASK.name])
        x = assemble(t[io.FEATURES.name], embedding, t[io.WINDOW_OWNER.name], t[io.WINDOW_TOKENS.name])
        np.testing.assert_allclose(x[0], ref.feature_vector, atol=1e-4, rtol=0)
        out = postprocess(trees(x), x)
        assert float(out[io.IELTS_BAND.name][0]) == ref.ielts_band
        assert float(out[io.IELTS_RAW.name][0]) == pytest.approx(ref.ielts_raw, abs=1e-4)
        assert tuple(out[io.BAND_INTERVAL.name].tolist()) == ref.band_interval  # EssayResult: a tuple
        assert io.decode_text(out[io.CEFR.name][0]) == ref.cefr
        np.testing.assert_allclose(out[io.CEFR_PROBABILITIES.name], list(ref.cefr_probabilities.values()),
                                   atol=1e-4, rtol=0)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_same_bands_as_pytorch_encoder(protocol, served, torch_reference) -> None:
    served_bands = [r.ielts_band for r in served[protocol]]
    torch_bands = [s.ielts_band for s in torch_reference]
    raw_delta = max(abs(r.ielts_raw - s.ielts_raw) for r, s in zip(served[protocol], torch_reference))
    assert served_bands == torch_bands, f"bands differ: triton {served_bands} vs torch {torch_bands}"
    assert raw_delta < 1e-3, raw_delta


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_empty_prompt_means_no_prompt(protocol, clients, cases) -> None:
    essay = cases[0][0]
    without = io.score(clients[protocol], essay, **({"client_timeout": TIMEOUT_S} if protocol == "grpc" else {}))
    empty = _infer(clients[protocol], *_raw_inputs(httpclient if protocol == "http" else grpcclient, essay, prompt=""))
    assert io.decode_response(empty).ielts_raw == without.ielts_raw


def _raw_inputs(mod, essay, prompt=None, essay_dtype="BYTES"):
    inputs = []
    if essay is not None:
        tensor = mod.InferInput("ESSAY", [1], essay_dtype)
        tensor.set_data_from_numpy(np.array([1.5], dtype=np.float32) if essay_dtype == "FP32"
                                   else io.bytes_tensor([essay]))
        inputs.append(tensor)
    if prompt is not None:
        tensor = mod.InferInput("PROMPT", [1], "BYTES")
        tensor.set_data_from_numpy(io.bytes_tensor([prompt]))
        inputs.append(tensor)
    return inputs, [mod.InferRequestedOutput(s.name) for s in io.ENSEMBLE_OUTPUTS]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case,expect", [
    ("fp32_essay", ("data-type", "essay", "bytes")),
    ("missing_essay", ("essay",)),
    ("empty_essay", ("empty",)),
    ("blank_essay", ("empty",)),
    ("invalid_utf8", ("utf-8",)),
])
def test_malformed_requests_get_clear_errors(protocol, case, expect, clients, cases) -> None:
    client = clients[protocol]
    mod = httpclient if protocol == "http" else grpcclient
    if case == "fp32_essay":
        inputs, outputs = _raw_inputs(mod, "x", essay_dtype="FP32")
    elif case == "missing_essay":
        inputs, outputs = _raw_inputs(mod, None, prompt="A prompt without an essay")
    elif case == "invalid_utf8":
        inputs, outputs = _raw_inputs(mod, "x")
        inputs[0].set_data_from_numpy(np.array([b"\xff\xfe not utf-8"], dtype=np.object_))
    else:
        inputs, outputs = _raw_inputs(mod, "" if case == "empty_essay" else "  \n\t ")
    with pytest.raises(InferenceServerException) as info:
        _infer(client, inputs, outputs)
    message = str(info.value).lower()
    assert all(word in message for word in expect), message
    # the server keeps serving
    good = io.score(client, cases[1][0], cases[1][1], **({"client_timeout": TIMEOUT_S} if protocol == "grpc" else {}))
    assert 0.0 <= good.ielts_band <= 9.0
