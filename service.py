"""The essayscore Bento: IELTS band, CEFR level, conformal interval, SHAP explanation and warnings over HTTP.

    ESSAYSCORE_MODEL_TAG=essayscore:latest bentoml serve service:EssayScoreService --port 3000
    ESSAYSCORE_RUNTIME=triton ESSAYSCORE_TRITON_URL=127.0.0.1:18000 bentoml serve service:EssayScoreService

Endpoints: POST /score, POST /score_batch, GET|POST /metadata, BentoML's /livez /readyz /metrics /docs.json.
Requests take the package's one request path (essayscore.serving.score_requests), as the batch CLI does.
Errors always look like ``{"error": {"code", "message", "field"}}`` (codes in essayscore.api_models); bodies over
the limit get 413, undecodable UTF-8 400 ``invalid_utf8``, pydantic schema errors 400 with a mapped code, and a
model backend that cannot answer 503 ``runtime_unavailable``. The model logic lives in essayscore.runtimes.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

with bentoml.importing():
    from essayscore import essay_warnings
    from essayscore.api_models import (
        BatchRequest,
        BatchResponse,
        MetadataResponse,
        ScoreRequest,
        ScoreResponse,
        error_body,
    )
    from essayscore.artifacts import Artifact
    from essayscore.http_guard import ApiGuard
    from essayscore.serving import Outcome, score_requests
    from essayscore.settings import get_settings

SETTINGS = get_settings()
# The largest legitimate body: a full batch of maximal essays and prompts, every character JSON-escaped (\uXXXX).
MAX_BODY_BYTES = SETTINGS.max_batch_size * (SETTINGS.max_essay_chars + SETTINGS.max_prompt_chars) * 6 + 65_536
API_PATHS = ("/score", "/score_batch", "/metadata")

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
    return JSONResponse(bentoml.get_current_service().metadata_payload)


@bentoml.asgi_app(Starlette(routes=[Route("/metadata", get_metadata, methods=["GET"])]), path="/")
@bentoml.service(name="essayscore", workers=SETTINGS.workers, traffic={"timeout": 300, "max_concurrency": 32},
                 resources={"cpu": "2"})
class EssayScoreService:
    if ":" in SETTINGS.model_tag and not Path(SETTINGS.model_tag).exists():
        model_ref = bentoml.models.BentoModel(SETTINGS.model_tag)  # bundled into the Bento by `bentoml build`

    def __init__(self) -> None:
        from essayscore.explain import Explainer
        from essayscore.runtimes import load_runtime

        self.settings = get_settings()
        self.artifact = Artifact.open(self.settings.model_tag, self.settings.artifacts_dir)
        self.runtime = load_runtime(self.settings.runtime, self.artifact)
        self.explainer = Explainer(self.artifact)
        self.metadata_payload = self._metadata()

    def __is_ready__(self) -> bool:
        return self.runtime.ready()

    # -- endpoints ------------------------------------------------------------------------------------------
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

        limit = self.settings.max_batch_size
        if len(request.items) > limit:
            return error_response(400, "batch_too_large", f"the batch has {len(request.items)} items; the limit "
                                                          f"is {limit}", "items")
        if not request.items:
            return error_response(400, "empty", "'items' is empty", "items")
        try:
            answered = self._score_many(request.items)
        except RuntimeUnavailable as exc:
            return error_response(503, "runtime_unavailable", str(exc))
        return BatchResponse.model_validate({"results": [
            {"ok": False, "error": o.error.to_dict()} if o.error is not None else {"ok": True, "result": response}
            for o, response in answered]})

    @bentoml.api(route="/metadata", output_spec=MetadataResponse)
    def metadata(self) -> MetadataResponse:
        return MetadataResponse.model_validate(self.metadata_payload)

    # -- glue -----------------------------------------------------------------------------------------------
    def _score_many(self, raw_items: list) -> list[tuple[Outcome, dict | None]]:
        """The one request path (essayscore.serving), then each scored item's warnings, explanation and response
        body (None for an item with an error). Order preserved."""
        start = time.perf_counter()
        collected = score_requests(self.runtime, raw_items)
        for name, ms in collected.timings_ms.items():
            STAGE_SECONDS.labels(stage=name.removesuffix("_ms"), runtime=self.runtime.name).observe(ms / 1e3)
        return [(o, self._format(o, {"validation_ms": o.validation_ms, **collected.timings_ms}, start)
                 if o.result is not None else None) for o in collected.outcomes]

    def _format(self, outcome: Outcome, timings: dict, start: float) -> dict:
        req, r = outcome.request, outcome.result
        t0 = time.perf_counter()
        warnings = [w.to_dict() for w in essay_warnings.check(req.essay, req.prompt, r.handcrafted)]
        t1 = time.perf_counter()
        explanation = self.explainer.explain(r.feature_vector, r.handcrafted)[0] if req.explain else None
        t2 = time.perf_counter()
        timings = {**timings, "warnings_ms": (t1 - t0) * 1e3}
        if req.explain:
            timings["explain_ms"] = (t2 - t1) * 1e3
        timings["total_ms"] = (time.perf_counter() - start) * 1e3
        for stage in ("warnings", "explain", "total"):
            if f"{stage}_ms" in timings:
                STAGE_SECONDS.labels(stage=stage, runtime=self.runtime.name).observe(timings[f"{stage}_ms"] / 1e3)
        PREDICTED_BANDS.labels(band=r.band_label).inc()
        return {
            "essay_id": req.essay_id or "essay-" + hashlib.sha256(req.essay.encode("utf-8")).hexdigest()[:12],
            "ielts_band": r.ielts_band, "ielts_band_label": r.band_label, "ielts_raw": r.ielts_raw,
            "band_interval": {"low": r.band_interval[0], "high": r.band_interval[1],
                              "level": self.artifact.interval_level},
            "cefr": r.cefr, "cefr_probabilities": dict(r.cefr_probabilities),
            "length_adjustment": r.length_adjustment, "explanation": explanation,
            "issues": [m.to_dict() for m in r.matches] if req.include_issues else None,
            "warnings": warnings, "model_version": r.model_version, "runtime": self.runtime.name,
            "timings": timings,
        }

    def _metadata(self) -> dict:
        a, s = self.artifact, self.settings
        sources = a.sources or {"sources": [], "licence": ""}  # an artifact from before sources were recorded
        keep = ("key", "name", "texts", "label_type", "licence", "commercial_use", "citation")  # no host paths
        return {
            "model_version": self.runtime.version, "runtime": self.runtime.name,
            "encoder": {**a.encoder_config, "backend": self.runtime.encoder_backend},
            "metrics": a.metrics.get("splits", a.metrics),
            "feature_registry": a.registry,
            "interval_level": a.interval_level,
            "limits": {"max_essay_chars": s.max_essay_chars, "max_prompt_chars": s.max_prompt_chars,
                       "max_batch_size": s.max_batch_size, "max_body_bytes": MAX_BODY_BYTES,
                       "min_words_warning": s.min_words_warning},
            "training_sources": [{k: src[k] for k in keep} for src in sources["sources"]],
            "licence": sources["licence"],
        }


# Body-size limit (413), UTF-8 check and one error shape for BentoML's own errors (essayscore.http_guard)
EssayScoreService.add_asgi_middleware(ApiGuard, max_body_bytes=MAX_BODY_BYTES, paths=API_PATHS)
