"""The Bento on the Triton runtime: a cpu model repository built from the session's artifact, a REAL tritonserver
(from nvidia-pytriton), and ``bentoml serve`` with ``ESSAYSCORE_RUNTIME=triton``.

* The Bento's answers equal the embedded runtime's (in-process EmbeddedRuntime, what the embedded Bento runs):
  same half band, CEFR, interval and warnings; raw score, probabilities and SHAP groups within 1e-3 (the
  repository's ONNX encoder vs PyTorch).
* A gRPC call to Triton's ``essay_scorer`` (triton_io over gRPC) and the TritonRuntime over gRPC give the same band
  as the Bento's HTTP API.
* Triton stopped -> /readyz not ready and /score a 503 with a clear error, within the configured timeouts;
  Triton restarted on the same ports -> the Bento recovers by itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from essayscore import triton_io as io
from essayscore import triton_launcher

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not triton_launcher.is_installed(),
                       reason="tritonserver binary not installed (scripts/install_triton.sh)"),
]

httpx = pytest.importorskip("httpx")
grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("tritonclient.http")

from test_service import BentoServer  # noqa: E402  (tests/ is on sys.path under pytest's default import mode)

# The Bento talks to Triton over HTTP by default; ESSAYSCORE_TEST_BENTO_PROTOCOL=grpc runs the module over gRPC.
BENTO_PROTOCOL = os.environ.get("ESSAYSCORE_TEST_BENTO_PROTOCOL", "http")
TRITON_TIMEOUT_S = 10  # the Bento's per-call Triton timeout in this module
TRITON_RETRIES = 1
N_ESSAYS = 4


@pytest.fixture(scope="module")
def cpu_repo(trained_artifact: Path, tmp_path_factory) -> Path:
    from training.build_repository import build_repository

    out = tmp_path_factory.mktemp("bento-triton") / "model_repository"
    # int8: the artifact's own validated export, the one the embedded runtime serves too (same answers expected)
    build_repository(trained_artifact, out, profile="cpu", cpu_variant="int8")
    return out


@pytest.fixture(scope="module")
def stub_env():
    try:
        return triton_launcher.prepare_stub_env()
    except Exception as exc:  # pragma: no cover - offline without a cached numpy 1.26 wheel
        pytest.skip(f"could not prepare the python backend stub env: {exc}")


def _triton(cpu_repo, stub_env, log, ports=(None, None, None)):
    return triton_launcher.TritonServer(cpu_repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                                        log_path=log, stub_python_env=stub_env)


@pytest.fixture(scope="module")
def triton(cpu_repo, stub_env, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton-log") / "server.log"
    state = {"server": _triton(cpu_repo, stub_env, log).start(timeout_s=180), "log": log}
    yield state
    state["server"].stop()


@pytest.fixture(scope="module")
def bento(trained_artifact, triton):
    url = triton["server"].grpc_url if BENTO_PROTOCOL == "grpc" else triton["server"].http_url
    server = BentoServer(trained_artifact, ESSAYSCORE_RUNTIME="triton", ESSAYSCORE_TRITON_URL=url,
                         ESSAYSCORE_TRITON_PROTOCOL=BENTO_PROTOCOL, ESSAYSCORE_TRITON_TIMEOUT_S=str(TRITON_TIMEOUT_S),
                         ESSAYSCORE_TRITON_RETRIES=str(TRITON_RETRIES)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(bento):
    with httpx.Client(base_url=bento.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def cases(shared_essays):
    rows = shared_essays.sort_values("band").reset_index(drop=True)
    picks = rows.iloc[np.linspace(0, len(rows) - 1, N_ESSAYS).astype(int)]
    return [(r.essay, r.prompt if i % 2 == 0 else None) for i, r in enumerate(picks.itertuples())]


@pytest.fixture(scope="module")
def served(client, cases):
    out = []
    for essay, prompt in cases:
        r = client.post("/score", json={"essay": essay, "prompt": prompt, "explain": True, "include_issues": True})
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


@pytest.fixture(scope="module")
def embedded(trained_artifact, cases):
    """What the embedded Bento computes for the same essays (the same runtime, loaded the same way, in process:
    the artifact's int8 ONNX encoder, as in the Triton repository)."""
    from essayscore import warnings as essay_warnings
    from essayscore.explain import Explainer
    from essayscore.runtimes import Item, load_runtime

    runtime = load_runtime("embedded", trained_artifact)
    assert runtime.encoder_backend == "onnx-int8"
    explainer = Explainer(trained_artifact)
    scored = runtime.score([Item(e, p) for e, p in cases]).scored  # one batch: scores do not depend on batch-mates
    return [(s, explainer.explain(s.x, s.handcrafted)[0],
             {w.code for w in essay_warnings.check(e, p, s.handcrafted)}) for s, (e, p) in zip(scored, cases)]


# ---------------------------------------------------------------------------------------------------------------
def test_ready_and_metadata(client, bento) -> None:
    assert client.get("/readyz").status_code == 200
    meta = client.get("/metadata").json()
    assert meta["runtime"] == "triton" and meta["model_version"] == bento.version


def test_same_answers_as_embedded_runtime(served, embedded, bento) -> None:
    for got, (ref, ref_explanation, ref_warnings) in zip(served, embedded):
        want = ref.result
        assert got["runtime"] == "triton" and got["model_version"] == bento.version
        assert got["ielts_band"] == want["ielts_band"]
        assert got["cefr"] == want["cefr"]
        assert [got["band_interval"]["low"], got["band_interval"]["high"]] == want["band_interval"]
        assert got["ielts_raw"] == pytest.approx(want["ielts_raw"], abs=1e-3)
        for level, p in want["cefr_probabilities"].items():
            assert got["cefr_probabilities"][level] == pytest.approx(p, abs=1e-3)
        assert {w["code"] for w in got["warnings"]} == ref_warnings
        assert got["issues"] == [m.to_dict() for m in ref.matches]
        e = got["explanation"]
        assert e["base_value"] == pytest.approx(ref_explanation["base_value"], abs=1e-5)
        for group, value in ref_explanation["groups"].items():
            assert e["groups"][group] == pytest.approx(value, abs=1e-3), group
        # SHAP from Triton's FEATURE_VECTOR is additive too (the compiled trees vs XGBoost: float tolerance)
        assert e["base_value"] + sum(e["groups"].values()) == pytest.approx(got["ielts_raw"], abs=1e-3)
        assert "triton_ms" in got["timings"]


def test_grpc_to_triton_gives_the_bento_band(triton, served, cases, trained_artifact) -> None:
    from essayscore.runtimes import Item
    from essayscore.runtimes.triton import TritonRuntime

    server = triton["server"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for (essay, prompt), got in zip(cases, served):
            direct = io.score(client, essay, prompt, client_timeout=60)
            assert direct["ielts_band"] == got["ielts_band"]
            assert direct["ielts_raw"] == pytest.approx(got["ielts_raw"], abs=1e-6)
    finally:
        client.close()
    runtime = TritonRuntime(trained_artifact, url=server.grpc_url, protocol="grpc", timeout_s=30, retries=1)
    assert runtime.ready()
    batch = runtime.score([Item(e, p) for e, p in cases])
    assert [s.result["ielts_band"] for s in batch.scored] == [g["ielts_band"] for g in served]


def test_batch_through_triton(client, cases, served) -> None:
    r = client.post("/score_batch", json={"items": [{"essay": cases[0][0], "prompt": cases[0][1]}, {"essay": " "}]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["ok"] and results[0]["result"]["ielts_band"] == served[0]["ielts_band"]
    assert not results[1]["ok"] and results[1]["error"]["code"] == "empty"


def _wait_ready(client, want: int, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if client.get("/readyz").status_code == want:
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"/readyz did not become {want} within {timeout_s} s")


def test_triton_hung_gives_503_within_timeouts(client, triton, cases, served) -> None:
    """A Triton that accepts connections but never answers (SIGSTOP): bounded by the timeouts, not a hang."""
    import signal

    pgid = triton["server"].pid
    os.killpg(pgid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = client.post("/score", json={"essay": cases[2][0]})
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "runtime_unavailable"
        assert TRITON_TIMEOUT_S * 0.9 <= elapsed < TRITON_TIMEOUT_S * (TRITON_RETRIES + 1) + 10, elapsed
        assert client.get("/readyz").status_code == 503
        print(f"hung Triton: 503 after {elapsed:.1f} s")
    finally:
        os.killpg(pgid, signal.SIGCONT)
    _wait_ready(client, 200, 30)
    r = client.post("/score", json={"essay": cases[2][0], "prompt": cases[2][1]})
    assert r.status_code == 200 and r.json()["ielts_band"] == served[2]["ielts_band"]


def test_triton_down_then_back(client, triton, cpu_repo, stub_env, cases, served) -> None:
    server = triton["server"]
    ports = (server.http_port, server.grpc_port, server.metrics_port)
    server.stop()
    _wait_ready(client, 503, 30)
    started = time.monotonic()
    r = client.post("/score", json={"essay": cases[1][0]})
    elapsed = time.monotonic() - started
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "runtime_unavailable" and "Triton" in err["message"]
    assert elapsed < TRITON_TIMEOUT_S * (TRITON_RETRIES + 1) + 10, elapsed
    r = client.post("/score_batch", json={"items": [{"essay": cases[1][0]}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "runtime_unavailable"
    assert client.get("/livez").status_code == 200  # alive, just not ready

    # same ports (TIME_WAIT sockets do not block tritonserver, which binds with SO_REUSEADDR)
    deadline = time.monotonic() + 30
    while not all(triton_launcher.port_is_free(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.5)
    triton["server"] = _triton(cpu_repo, stub_env, triton["log"], ports).start(timeout_s=180)
    recovered_after = _wait_ready(client, 200, 60)
    print(f"503 answered after {elapsed:.2f} s; ready again {recovered_after:.1f} s after Triton was back")
    r = client.post("/score", json={"essay": cases[1][0], "prompt": cases[1][1]})
    assert r.status_code == 200, r.text
    assert r.json()["ielts_band"] == served[1]["ielts_band"]
