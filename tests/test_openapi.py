"""The served OpenAPI document is truthful: every API operation declares its request schema (with examples), its
success schema and every error status it can answer, all with the one error shape; and a bounded schemathesis run
against the real ``bentoml serve`` (positive and negative cases, fixed and derandomized) finds no failure.

The longer run (>= 2,000 cases) is ``loadtests/fuzz.sh URL``; its result is in the README ("API fuzzing").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

API_OPERATIONS = {("post", "/score"), ("post", "/score_batch"), ("post", "/metadata"), ("get", "/metadata")}
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = 60  # per operation in the fuzzing phase; with the examples and coverage phases ~350 cases in all


@pytest.fixture(scope="module")
def spec(client) -> dict:
    r = client.get("/docs.json")
    assert r.status_code == 200, r.text
    return r.json()


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_every_operation_declares_its_schemas_and_error_statuses(spec) -> None:
    from essayscore.openapi import OPERATION_ERRORS

    found = {(m, p) for p, item in spec["paths"].items() for m in item}
    assert API_OPERATIONS <= found
    for method, path in API_OPERATIONS:
        op = spec["paths"][path][method]
        responses = op["responses"]
        assert set(responses) == {"200", *map(str, OPERATION_ERRORS[(method, path)])}, (method, path)
        assert "$ref" in responses["200"]["content"]["application/json"]["schema"]
        for status, response in responses.items():
            if status != "200":
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
        if method == "post":
            media = op["requestBody"]["content"]
            assert list(media) == ["application/json"]
            assert media["application/json"]["examples"], (method, path)
    for path in ("/score", "/score_batch"):
        assert spec["paths"][path]["post"]["requestBody"]["required"] is True
        assert {"400", "413", "415", "429", "503", "504"} <= set(spec["paths"][path]["post"]["responses"])
    assert "422" in spec["paths"]["/score"]["post"]["responses"]


def test_error_shape_is_the_one_the_service_answers(spec, client) -> None:
    error = _resolve(spec, spec["components"]["schemas"]["ErrorResponse"]["properties"]["error"])
    assert error["type"] == "object" and {"code", "message", "field"} <= set(error["properties"])
    assert error["properties"]["field"].get("nullable") is True
    # BentoML's own {"error": str} schemas are gone
    assert not {"InvalidArgument", "NotFound", "InternalServerError"} & set(spec["components"]["schemas"])
    body = client.post("/score", json={"essay": ""}).json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}


def test_request_schemas_carry_the_limits_and_nullables(spec, client) -> None:
    limits = client.get("/metadata").json()["limits"]
    score = spec["components"]["schemas"]["ScoreRequest"]
    assert score["additionalProperties"] is False and score["required"] == ["essay"]
    assert score["properties"]["essay"]["maxLength"] == limits["max_essay_chars"]
    assert score["properties"]["prompt"]["nullable"] is True  # BentoML's flattened schema said "string" only
    items = spec["components"]["schemas"]["BatchRequest"]["properties"]["items"]
    assert items["maxItems"] == limits["max_batch_size"] and items["items"] == {
        "$ref": "#/components/schemas/ScoreRequest"}
    for example in spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"][
            "examples"].values():
        r = client.post("/score", json=example["value"])
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("content_type", [
    "multipart/form-data", "multipart/form-data; boundary=x", "text/plain", "application/x-www-form-urlencoded",
    "application/json; charset=latin-1", "application/xml", "",
])
@pytest.mark.parametrize("path", ["/score", "/score_batch", "/metadata"])
def test_unsupported_media_types_answer_415(client, path, content_type) -> None:
    r = client.post(path, content=b'{"essay": "An essay."}', headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == "unsupported_media_type" and err["message"] and "field" in err


def test_json_with_charset_is_accepted(client) -> None:
    r = client.post("/score_batch", content=b'{"items": [{"essay": ""}]}',
                    headers={"content-type": "Application/JSON; charset=UTF-8"})
    assert r.status_code == 200 and r.json()["results"][0]["error"]["code"] == "empty"
    assert client.post("/metadata").status_code == 200  # no body, no content type: fine


def schemathesis_command(url: str, max_examples: int, report_dir: Path, *, seed: int | None = None,
                         workers: int = 1) -> list[str]:
    """The schemathesis CLI run used here and by loadtests/fuzz.sh (deterministic unless a seed is given)."""
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    cmd = [st, "run", f"{url}/docs.json", "--checks", CHECKS, "--mode", "all", "--max-examples", str(max_examples),
           "--include-path-regex", "^/(score|score_batch|metadata)$", "--phases", "examples,coverage,fuzzing",
           "--workers", str(workers), "--request-timeout", "120", "--suppress-health-check", "all", "--no-color",
           "--report", "junit", "--report-dir", str(report_dir)]
    # derandomized (no example database either) unless a seed is given
    cmd += ["--seed", str(seed), "--generation-database", "none"] if seed is not None else [
        "--generation-deterministic"]
    return cmd


def test_schemathesis_finds_no_failure(bento, tmp_path) -> None:
    start = time.monotonic()
    run = subprocess.run(schemathesis_command(bento.url, MAX_EXAMPLES, tmp_path / "report"), cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - start
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases is not None, out[-3000:]
    generated, passed = int(cases.group(1)), int(cases.group(2))
    print(f"schemathesis: {generated} cases, {generated - passed} failures, {elapsed:.1f} s")
    assert generated == passed and generated >= 200, out[-3000:]
    assert "No issues found" in out, out[-3000:]
