"""The Bento on the Triton runtime: the session's cpu model repository (the artifact's own int8 export), a REAL
tritonserver (from nvidia-pytriton), and ``bentoml serve`` with ``ESSAYSCORE_RUNTIME=triton``, once with the
Bento talking to Triton over HTTP and once over gRPC (the ``bento`` fixture is parametrised over both transports;
every test below runs for each).

* The Bento's answers equal the embedded runtime's (in-process EmbeddedRuntime, what the embedded Bento runs):
  same half band, CEFR, interval and warnings; raw score, probabilities and SHAP groups within 1e-3 (the
  repository's ONNX encoder vs PyTorch).
* A direct call to Triton's ``essay_scorer`` (triton_io) and the TritonRuntime over the OTHER transport than the
  Bento's give the same band as the Bento's API (gRPC against the HTTP Bento, HTTP against the gRPC Bento).
* Triton hung or stopped -> /readyz not ready and /score a 503 with a clear error, within the configured timeouts;
  Triton restarted on the same ports -> the Bento recovers by itself.
"""

from __future__ import annotations

import os
import time

import pytest

from devtools import triton_launcher
from devtools.servers import BentoServer, TritonServer, port_is_free
from essayscore import triton_io as io

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not triton_launcher.is_installed(),
                       reason="tritonserver binary not installed (scripts/install_triton.sh)"),
]

httpx = pytest.importorskip("httpx")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")

PROTOCOLS = ("http", "grpc")  # how the Bento talks to Triton
TRITON_TIMEOUT_S = 10  # the Bento's per-call Triton timeout in this module
TRITON_RETRIES = 1
N_ESSAYS = 4  # conftest's ``cases``


def _triton(cpu_repo, stub_env, log, ports=(None, None, None)):
    return TritonServer(cpu_repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                        log_path=log, stub_python_env=stub_env)


@pytest.fixture(scope="module")
def triton(cpu_repo, stub_env, tmp_path_factory):
    """One tritonserver for both Bentos (a test may restart it on the same ports: ``state["server"]``)."""
    log = tmp_path_factory.mktemp("triton-log") / "server.log"
    state = {"server": _triton(cpu_repo, stub_env, log).start(timeout_s=180), "log": log}
    yield state
    state["server"].stop()


@pytest.fixture(scope="module", params=PROTOCOLS)
def bento(request, trained_artifact, triton):
    """The Bento on the Triton runtime, over ``request.param`` (one Bento at a time: pytest groups the module's
    tests by the parameter)."""
    protocol = request.param
    server = BentoServer(trained_artifact, ESSAYSCORE_RUNTIME="triton",
                         ESSAYSCORE_TRITON_URL=triton["server"].url(protocol), ESSAYSCORE_TRITON_PROTOCOL=protocol,
                         ESSAYSCORE_TRITON_TIMEOUT_S=str(TRITON_TIMEOUT_S),
                         ESSAYSCORE_TRITON_RETRIES=str(TRITON_RETRIES))
    with server:
        yield server


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
    from essayscore import essay_warnings
    from essayscore.explain import Explainer
    from essayscore.runtimes import Item, load_runtime

    runtime = load_runtime("embedded", trained_artifact)
    assert runtime.encoder_backend == "onnx-int8"
    explainer = Explainer(trained_artifact)
    scored = runtime.score([Item(e, p) for e, p in cases]).results  # one batch: scores do not depend on batch-mates
    return [(s, explainer.explain(s.feature_vector, s.handcrafted)[0],
             {w.code for w in essay_warnings.check(e, p, s.handcrafted)}) for s, (e, p) in zip(scored, cases)]


# ---------------------------------------------------------------------------------------------------------------
def test_ready_and_metadata(client, bento) -> None:
    assert client.get("/readyz").status_code == 200
    meta = client.get("/metadata").json()
    assert meta["runtime"] == "triton" and meta["model_version"] == bento.version


def test_same_answers_as_embedded_runtime(served, embedded, bento) -> None:
    for got, (ref, ref_explanation, ref_warnings) in zip(served, embedded):
        want = ref.scores()
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


def test_other_transport_to_triton_gives_the_bento_band(triton, bento, served, cases, trained_artifact) -> None:
    """The HTTP Bento against direct gRPC calls (and the gRPC Bento against direct HTTP calls)."""
    from essayscore.runtimes import Item
    from essayscore.runtimes.triton import TritonRuntime

    server = triton["server"]
    protocol = "http" if bento.env["ESSAYSCORE_TRITON_PROTOCOL"] == "grpc" else "grpc"
    if protocol == "grpc":
        client, kwargs = grpcclient.InferenceServerClient(server.grpc_url), {"client_timeout": 60}
    else:
        client, kwargs = httpclient.InferenceServerClient(server.http_url, network_timeout=60), {}
    try:
        for (essay, prompt), got in zip(cases, served):
            direct = io.score(client, essay, prompt, **kwargs)
            assert direct.ielts_band == got["ielts_band"]
            assert direct.ielts_raw == pytest.approx(got["ielts_raw"], abs=1e-6)
    finally:
        client.close()
    runtime = TritonRuntime(trained_artifact, url=server.url(protocol), protocol=protocol, timeout_s=30, retries=1)
    assert runtime.ready()
    batch = runtime.score([Item(e, p) for e, p in cases])
    assert [s.ielts_band for s in batch.results] == [g["ielts_band"] for g in served]


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
    while not all(port_is_free(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.5)
    triton["server"] = _triton(cpu_repo, stub_env, triton["log"], ports).start(timeout_s=180)
    recovered_after = _wait_ready(client, 200, 60)
    print(f"503 answered after {elapsed:.2f} s; ready again {recovered_after:.1f} s after Triton was back")
    r = client.post("/score", json={"essay": cases[1][0], "prompt": cases[1][1]})
    assert r.status_code == 200, r.text
    assert r.json()["ielts_band"] == served[1]["ielts_band"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batch_cli_on_the_triton_runtime(protocol, triton, trained_artifact, cases, tmp_path) -> None:
    """``essayscore score --runtime triton``: the CSV backfill takes the same request path on Triton, and gives the
    embedded runtime's scores (same int8 graph) and the same per-row errors."""
    import csv
    import subprocess
    import sys

    from essayscore.runtimes import load_runtime

    rows = [{"id": f"e{i}", "prompt": p or "", "essay": e} for i, (e, p) in enumerate(cases[:3])]
    rows.insert(1, {"id": "empty", "prompt": "", "essay": "   "})
    path, out = tmp_path / "in.csv", tmp_path / "out.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "prompt", "essay"])
        writer.writeheader()
        writer.writerows(rows)
    server = triton["server"]
    env = {**os.environ, "ESSAYSCORE_TRITON_URL": server.grpc_url if protocol == "grpc" else server.http_url,
           "ESSAYSCORE_TRITON_PROTOCOL": protocol}
    done = subprocess.run([sys.executable, "-m", "essayscore.cli", "score", str(path), "-o", str(out), "--model",
                           str(trained_artifact), "--runtime", "triton"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "(triton runtime)" in done.stdout and "1 rows have an error" in done.stdout
    with open(out, newline="", encoding="utf-8") as handle:
        result = list(csv.DictReader(handle))
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    assert result[1]["error"].startswith("empty")
    expected = load_runtime("embedded", trained_artifact).scorer.score([r["essay"] for r in rows if r["id"] != "empty"],
                                                                      [r["prompt"] or None for r in rows
                                                                       if r["id"] != "empty"])
    for row, want in zip([r for r in result if not r["error"]], expected):
        assert float(row["ielts_band"]) == want.ielts_band and row["cefr"] == want.cefr
        assert float(row["ielts_raw"]) == pytest.approx(want.ielts_raw, abs=1e-3)
        assert float(row["length_adjustment"]) == pytest.approx(want.length_adjustment, abs=1e-4)
