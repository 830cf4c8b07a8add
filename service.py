"""The essayscore Bento: IELTS band, CEFR level, conformal interval, SHAP explanation and warnings over HTTP.

    ESSAYSCORE_MODEL_TAG=essayscore:latest bentoml serve service:EssayScoreService --port 3000
    ESSAYSCORE_RUNTIME=triton ESSAYSCORE_TRITON_URL=127.0.0.1:18000 bentoml serve service:EssayScoreService

Endpoints: POST /score, POST /score_batch, GET|POST /metadata, BentoML's /livez /readyz /metrics /docs.json.
Requests take the package's one request path (essayscore.serving.score_requests, as the batch CLI does); the
responses come from essayscore.scoring_api.ScoringApi, which a second transport can serve as well.
Errors always look like ``{"error": {"code", "message", "field"}}`` (codes in essayscore.api_models); bodies over
the limit get 413, undecodable UTF-8 400 ``invalid_utf8``, pydantic schema errors 400 with a mapped code, and a
model backend that cannot answer 503 ``runtime_unavailable``. The model logic lives in essayscore.runtimes.
"""

from __future__ import annotations

import math
from pathlib import Path

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

with bentoml.importing():
    from essayscore.api_models import (
        BatchRequest,
        BatchResponse,
        MetadataResponse,
        ScoreRequest,
        ScoreResponse,
        error_body,
    )
    from essayscore.artifacts import store_tag
    from essayscore.http_guard import ApiGuard
    from essayscore.scoring_api import ScoringApi, max_body_bytes
    from essayscore.settings import bento_worker, get_settings

SETTINGS = get_settings()
WORKERS = bento_worker()  # one per usable core unless ESSAYSCORE_WORKERS; each gets its share of the cores
MAX_BODY_BYTES = max_body_bytes(SETTINGS)
API_PATHS = ("/score", "/score_batch", "/metadata")
# The guard (essayscore.http_guard) answers 504 and 429 in the one error shape; BentoML's own traffic limits stay
# as a backstop just behind it (its answers would be {"error": str}).
REQUEST_TIMEOUT_S = SETTINGS.request_timeout_s
MAX_CONCURRENCY = SETTINGS.max_concurrency
OPENAPI_DESCRIPTION = ("IELTS band, CEFR level, conformal interval, SHAP explanation and warnings for English essays. "
                       "Every error answer is `{\"error\": {\"code\", \"message\", \"field\"}}` (ErrorResponse).")

STAGE_SECONDS = bentoml.metrics.Histogram(
    name="essayscore_stage_seconds", documentation="Latency of each scoring stage (seconds).",
    labelnames=["stage", "runtime"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
PREDICTED_BANDS = bentoml.metrics.Counter(
    name="essayscore_predicted_band", documentation="Predicted IELTS half bands.", labelnames=["band"])


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status)


async def get_metadata(request: Request) -> JSONResponse:
    """GET /metadata (BentoML APIs are POST only; this mounted route serves the same payload)."""
    return JSONResponse(bentoml.get_current_service().api.metadata)


@bentoml.asgi_app(Starlette(routes=[Route("/metadata", get_metadata, methods=["GET"])]), path="/")
@bentoml.service(name="essayscore", workers=WORKERS, resources={"cpu": "2"},
                 traffic={"timeout": math.ceil(REQUEST_TIMEOUT_S) + 5,
                          "max_concurrency": MAX_CONCURRENCY + WORKERS})
class EssayScoreService:
    if not Path(SETTINGS.model_tag).exists() and (bundled := store_tag(SETTINGS.model_tag, SETTINGS.artifacts_dir)):
        model_ref = bentoml.models.BentoModel(bundled)  # `bentoml build` bundles it (default: the champion)

    def __init__(self) -> None:
        self.api = ScoringApi()
        # drift histograms (training-decile buckets) and this worker's rolling PSI (essayscore.monitoring)
        self.api.monitor.export_to(bentoml.metrics)

    def __is_ready__(self) -> bool:
        return self.api.ready()

    @bentoml.api(route="/score", output_spec=ScoreResponse)
    def score(self, request: ScoreRequest, /):
        from essayscore.runtimes import RuntimeUnavailable

        try:
            ((outcome, response),) = self._score_many([request.model_dump()])
        except RuntimeUnavailable as exc:
            return error_response(503, "runtime_unavailable", str(exc))
        if outcome.error is not None:
            return JSONResponse({"error": outcome.error.to_dict()}, status_code=outcome.error.status)
        return ScoreResponse.model_validate(response)

    @bentoml.api(route="/score_batch", output_spec=BatchResponse)
    def score_batch(self, request: BatchRequest, /):
        from essayscore.runtimes import RuntimeUnavailable

        refused = self.api.check_batch(request.items)
        if refused is not None:
            return error_response(refused.status, refused.code, refused.message, refused.field)
        try:
            answered = self._score_many(request.items)
        except RuntimeUnavailable as exc:
            return error_response(503, "runtime_unavailable", str(exc))
        return BatchResponse.model_validate({"results": [
            {"ok": False, "error": o.error.to_dict()} if o.error is not None else {"ok": True, "result": response}
            for o, response in answered]})

    @bentoml.api(route="/metadata", output_spec=MetadataResponse)
    def metadata(self) -> MetadataResponse:
        return MetadataResponse.model_validate(self.api.metadata)

    def _score_many(self, raw_items: list):
        runtime = self.api.runtime.name
        return self.api.score_many(
            raw_items, observe=lambda stage, s: STAGE_SECONDS.labels(stage=stage, runtime=runtime).observe(s),
            on_band=lambda band: PREDICTED_BANDS.labels(band=band).inc())


# Content type (415), body-size limit (413), UTF-8 check, in-flight limit (429), timeout (504), one error shape for
# BentoML's own errors, and the truthful /docs.json (essayscore.http_guard, essayscore.openapi)
EssayScoreService.add_asgi_middleware(
    ApiGuard, max_body_bytes=MAX_BODY_BYTES, paths=API_PATHS, timeout_s=REQUEST_TIMEOUT_S,
    max_concurrency=math.ceil(MAX_CONCURRENCY / WORKERS),  # per worker, as BentoML divides it
    release_busy_connections=SETTINGS.release_busy_connections,
    openapi={"max_essay_chars": SETTINGS.max_essay_chars, "max_prompt_chars": SETTINGS.max_prompt_chars,
             "max_batch_size": SETTINGS.max_batch_size, "description": OPENAPI_DESCRIPTION})
