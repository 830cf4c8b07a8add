"""Request and response models of the HTTP API (pydantic 2), with examples for the OpenAPI document.

Error shape of every 4xx/5xx answer: ``{"error": {"code": str, "message": str, "field": str|null}}`` (the
ASGI middleware in :mod:`essayscore.http_guard` rewrites BentoML's own error bodies, e.g. pydantic 400s, into it).
Codes: ``missing``, ``empty``, ``wrong_type``, ``too_long``, ``no_letters``, ``control_characters``,
``invalid_utf8``, ``invalid_json``, ``invalid_request`` (other schema problems), ``batch_too_large``,
``body_too_large`` (413), ``unsupported_media_type`` (415), ``scoring_failed`` (422), ``too_many_requests`` (429),
``internal_error`` (500), ``runtime_unavailable`` (503), ``timeout`` (504). :mod:`essayscore.openapi` publishes these
models (and every status) in the served OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EXAMPLE_ESSAY = (
    "Some people believe that university students should study whatever they like, while others think they "
    "should only be allowed to study subjects that will be useful in the future. In my opinion, students should "
    "be free to choose, because motivation is the key to success in higher education...")
EXAMPLE_PROMPT = ("Some people believe that university students should be allowed to study whatever they like. "
                  "Others believe that they should only be allowed to study subjects that will be useful in the "
                  "future, such as those related to science and technology. Discuss both views and give your "
                  "own opinion.")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example":
        {"essay": EXAMPLE_ESSAY, "prompt": EXAMPLE_PROMPT, "essay_id": "student-42", "explain": True}})

    essay: str = Field(description="The essay text (plain text, UTF-8; up to settings.max_essay_chars characters).")
    prompt: str | None = Field(None, description="The task prompt; enables prompt-alignment features and the "
                                                    "off-topic warning.")
    essay_id: str | None = Field(None, max_length=200, description="Echoed back; generated when absent.")
    explain: bool = Field(False, description="Include the SHAP explanation of the band.")
    include_issues: bool = Field(False, description="Include grammar and spelling issues (offsets into the essay "
                                                    "as sent).")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example":
        {"items": [{"essay": EXAMPLE_ESSAY, "prompt": EXAMPLE_PROMPT}, {"essay": ""}]}})

    # Items are validated one by one (as ScoreRequest) so that one malformed item fails alone.
    items: list[Any] = Field(description="Score requests (each a ScoreRequest object), at most "
                                         "settings.max_batch_size.")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["empty"], description="A stable machine-readable code (see the status's description).")
    message: str = Field(examples=["'essay' is empty or only whitespace"], description="For people; may change.")
    field: str | None = Field(None, examples=["essay"], description="The request field at fault, when there is one.")


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


class BandInterval(BaseModel):
    low: float = Field(examples=[5.5])
    high: float = Field(examples=[7.0])
    level: float = Field(0.9, description="Conformal coverage level of the interval.")


class CefrProbabilities(BaseModel):
    A1: float
    A2: float
    B1: float
    B2: float
    C1: float
    C2: float


class Issue(BaseModel):
    offset: int
    length: int
    category: str
    message: str
    suggestions: list[str]
    rule_id: str


class WarningItem(BaseModel):
    code: Literal["too_short", "off_topic", "not_english"]
    message: str


class TopFeature(BaseModel):
    name: str
    description: str
    group: str
    value: float | None
    contribution: float
    direction: Literal["raises", "lowers"]


class Explanation(BaseModel):
    base_value: float = Field(description="The model's output for a text at every signal's training mean and 250 "
                                          "words; base_value + sum(groups) == ielts_raw.")
    output: float
    length_adjustment: float = Field(
        0.0, description="Band points the IELTS Task 2 under-length rule (< 250 words) takes off; already part of "
                         "word_count's contribution and of the length_structure group.")
    top_features: list[TopFeature]
    groups: dict[str, float] = Field(description="SHAP contribution summed per feature group.")


class ScoreResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "essay_id": "student-42", "ielts_band": 6.5, "ielts_band_label": "6.5", "ielts_raw": 6.41,
        "band_interval": {"low": 5.5, "high": 7.5, "level": 0.9}, "cefr": "B2",
        "cefr_probabilities": {"A1": 0.01, "A2": 0.04, "B1": 0.2, "B2": 0.5, "C1": 0.22, "C2": 0.03},
        "warnings": [], "model_version": "v20261125-141610", "runtime": "embedded",
        "timings": {"validation_ms": 0.1, "features_ms": 70.0, "tokenise_ms": 1.0, "encoder_ms": 60.0,
                    "trees_ms": 1.0, "warnings_ms": 0.1, "total_ms": 135.0}}})

    essay_id: str
    ielts_band: float
    ielts_band_label: str = Field(description='"<4" for 3.5 (the model\'s "4 or below"), else the band as text.')
    ielts_raw: float
    band_interval: BandInterval
    cefr: Literal["A1", "A2", "B1", "B2", "C1", "C2"] = Field(
        description="The band -> CEFR table applied to the proficiency before the Task 2 length rule: equal to "
                    "the band's level from 250 words on.")
    cefr_probabilities: CefrProbabilities
    length_adjustment: float = Field(
        0.0, description="Band points the IELTS Task 2 under-length rule (< 250 words) took off ielts_band; 0 from "
                         "250 words on.")
    explanation: Explanation | None = None
    issues: list[Issue] | None = None
    warnings: list[WarningItem]
    model_version: str
    runtime: str
    timings: dict[str, float]


class BatchResult(BaseModel):
    ok: bool
    result: ScoreResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]


class Limits(BaseModel):
    max_essay_chars: int
    max_prompt_chars: int
    max_batch_size: int
    max_body_bytes: int
    min_words_warning: int


class MetadataResponse(BaseModel):
    model_version: str
    runtime: str
    encoder: dict
    metrics: dict = Field(description="Training metrics per split (the artifact's metrics.json).")
    feature_registry: list[dict]
    interval_level: float
    limits: Limits
    training_sources: list[dict] = Field(
        default_factory=list, description="Every source the model was trained on: key, name, texts, label type, "
                                          "licence, commercial use, citation.")
    licence: str = Field("", description="The licence the model inherits from its training sources.")


# ---- the error shape ----------------------------------------------------------------------------------------------
def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


_PYDANTIC_CODES = {"missing": "missing", "json_invalid": "invalid_json", "json_type": "invalid_json",
                   "extra_forbidden": "invalid_request", "string_too_long": "too_long"}


def map_pydantic_error(errors: Sequence[Mapping[str, Any]]) -> dict:
    """The first pydantic error -> our error detail (``*_type`` / ``*_parsing`` -> ``wrong_type``)."""
    if not errors:
        return {"code": "invalid_request", "message": "the request does not match the schema", "field": None}
    e = errors[0]
    loc = [str(p) for p in e.get("loc", ()) if p not in ("body",)]
    field = ".".join(loc) or None
    kind = e.get("type", "")
    code = _PYDANTIC_CODES.get(kind) or ("wrong_type" if kind.endswith(("_type", "_parsing")) else "invalid_request")
    message = f"'{field}': {e.get('msg', kind)}" if field else e.get("msg", kind)
    if kind == "missing" and field:
        message = f"'{field}' is required"
    return {"code": code, "message": message, "field": field}
