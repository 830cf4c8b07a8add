"""The service's OpenAPI document, made truthful: :func:`truthful_spec` takes the document BentoML generates (its
infrastructure endpoints, info and tags) and replaces the API operations with what the service really does.

BentoML's own document flattens the request and response schemas (dropping ``null`` from optional fields), says
every error body is ``{"error": str}`` and declares only 400/404/500; it also omits the mounted ``GET /metadata``.
Here every API operation gets its request schema (with examples) and success schema straight from the pydantic
models in :mod:`essayscore.api_models` (converted to OpenAPI 3.0: ``anyOf [X, null]`` -> ``nullable``), the limits
of :mod:`essayscore.settings`, and every error status the service can answer, each with the one error shape
(``ErrorResponse``). :class:`essayscore.http_guard.ApiGuard` serves this document at ``/docs.json``.
"""

from __future__ import annotations

import copy
from typing import Any

from essayscore.api_models import (
    EXAMPLE_ESSAY,
    EXAMPLE_PROMPT,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    MetadataResponse,
    ScoreRequest,
    ScoreResponse,
)

REF = "#/components/schemas/{model}"
JSON = "application/json"

# Every error status the API paths can answer and what it means (the body is always ErrorResponse).
ERROR_STATUSES: dict[int, str] = {
    400: "The request is invalid: codes `missing`, `empty`, `wrong_type`, `too_long`, `no_letters`, "
         "`control_characters`, `invalid_utf8`, `invalid_json`, `invalid_request`, `batch_too_large`.",
    413: "The request body is over the limit (`body_too_large`; the limit is `limits.max_body_bytes` in /metadata).",
    415: "The request body is not `application/json` (UTF-8) (`unsupported_media_type`).",
    422: "The essay passed validation but could not be scored (`scoring_failed`).",
    429: "Too many requests in flight on this worker (`too_many_requests`); retry later.",
    500: "An unexpected server error (`internal_error`).",
    503: "The model backend cannot answer (`runtime_unavailable`), e.g. Triton is down; retry later.",
    504: "The request was not answered within the service's request timeout (`timeout`).",
}

# The statuses each operation can answer (method, path) -> statuses.
OPERATION_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/score"): (400, 413, 415, 422, 429, 500, 503, 504),
    ("post", "/score_batch"): (400, 413, 415, 429, 500, 503, 504),
    ("post", "/metadata"): (400, 413, 415, 429, 500, 504),
    ("get", "/metadata"): (429, 500, 504),
}

SHORT_EXAMPLE = "Schools are important because they teach children how to live together and respect each other."


def component_schemas(max_essay_chars: int, max_prompt_chars: int, max_batch_size: int) -> dict[str, Any]:
    """The pydantic models of the API as OpenAPI 3.0 component schemas, with the configured limits."""
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(ScoreRequest, "validation"), (BatchRequest, "validation"), (ScoreResponse, "serialization"),
         (BatchResponse, "serialization"), (MetadataResponse, "serialization"), (ErrorResponse, "serialization")],
        ref_template=REF)
    schemas = {name: to_openapi30(schema) for name, schema in top["$defs"].items()}
    request = schemas["ScoreRequest"]["properties"]
    request["essay"]["maxLength"] = max_essay_chars
    request["prompt"]["maxLength"] = max_prompt_chars
    # Each item is a ScoreRequest; a malformed item fails alone (its result has ok=false), the batch still 200.
    schemas["BatchRequest"]["properties"]["items"] = {
        "type": "array", "items": {"$ref": REF.format(model="ScoreRequest")}, "minItems": 1,
        "maxItems": max_batch_size, "description": schemas["BatchRequest"]["properties"]["items"]["description"]}
    schemas["ErrorResponse"]["example"] = {
        "error": {"code": "empty", "message": "'essay' is empty or only whitespace", "field": "essay"}}
    return schemas


def to_openapi30(schema: Any) -> Any:
    """A JSON Schema (pydantic 2) -> an OpenAPI 3.0 schema object: ``anyOf [X, {type: null}]`` becomes X with
    ``nullable: true``, ``const`` becomes a one-value ``enum``, ``examples`` the first ``example``."""
    if isinstance(schema, list):
        return [to_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_openapi30(v) for k, v in schema.items()}
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [s for s in any_of if s != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out = {**rest[0], **out}
        elif len(rest) == 1:
            out["allOf"] = rest
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "examples" in out and isinstance(out["examples"], list):
        examples = out.pop("examples")
        if examples:
            out.setdefault("example", examples[0])
    return out


def _ref(model: str) -> dict:
    return {"$ref": REF.format(model=model)}


def _responses(method: str, path: str, success: str) -> dict:
    out: dict[str, Any] = {"200": {"description": "Successful Response", "content": {JSON: {"schema": _ref(success)}}}}
    for status in OPERATION_ERRORS[(method, path)]:
        out[str(status)] = {"description": ERROR_STATUSES[status], "content": {JSON: {"schema": _ref("ErrorResponse")}}}
    return out


def _operation(method: str, path: str, name: str, description: str, success: str,
               request: str | None = None, examples: dict | None = None, required: bool = True) -> dict:
    op: dict[str, Any] = {"tags": ["Service APIs"], "operationId": f"essayscore__{name}", "description": description,
                          "responses": _responses(method, path, success)}
    if request is not None:
        media: dict[str, Any] = {"schema": _ref(request)}
        if examples:
            media["examples"] = {k: {"value": v} for k, v in examples.items()}
        op["requestBody"] = {"required": required, "content": {JSON: media}}
    return op


def api_paths() -> dict[str, dict]:
    return {
        "/score": {"post": _operation(
            "post", "/score", "score", "Score one essay: IELTS band, CEFR level, conformal interval, warnings and, on "
            "request, the SHAP explanation and grammar issues.", "ScoreResponse", "ScoreRequest",
            {"full": {"essay": EXAMPLE_ESSAY, "prompt": EXAMPLE_PROMPT, "essay_id": "student-42", "explain": True},
             "minimal": {"essay": SHORT_EXAMPLE}})},
        "/score_batch": {"post": _operation(
            "post", "/score_batch", "score_batch", "Score up to `limits.max_batch_size` essays; each item succeeds "
            "or fails alone (`ok`, `result`, `error`), in request order.", "BatchResponse", "BatchRequest",
            {"two": {"items": [{"essay": SHORT_EXAMPLE, "essay_id": "a"}, {"essay": "", "essay_id": "b"}]}})},
        "/metadata": {
            "get": _operation("get", "/metadata", "metadata_get", "The model's metadata: version, runtime, encoder, "
                              "metrics, feature registry, limits, training sources and licence.",
                              "MetadataResponse"),
            "post": _operation("post", "/metadata", "metadata", "The model's metadata (as GET /metadata); the body "
                               "is an empty JSON object.", "MetadataResponse", "MetadataRequest", {"empty": {}},
                               required=False)},
    }


def truthful_spec(bentoml_spec: dict, *, max_essay_chars: int, max_prompt_chars: int, max_batch_size: int,
                  description: str | None = None) -> dict:
    """BentoML's document with the API operations, their schemas and their error responses replaced."""
    spec = copy.deepcopy(bentoml_spec)
    paths = {p: item for p, item in (spec.get("paths") or {}).items() if p not in ("/score", "/score_batch",
                                                                                   "/metadata")}
    paths.update(api_paths())
    spec["paths"] = paths
    schemas = component_schemas(max_essay_chars, max_prompt_chars, max_batch_size)
    schemas["MetadataRequest"] = {"type": "object", "title": "MetadataRequest", "properties": {},
                                  "description": "No fields; an empty object."}
    spec["components"] = {"schemas": schemas}
    if description is not None:
        spec.setdefault("info", {})["description"] = description
    return spec
