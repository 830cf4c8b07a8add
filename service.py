"""The essayscore Bento: IELTS band, CEFR level, conformal interval, SHAP explanation and warnings over HTTP.

    ESSAYSCORE_MODEL_TAG=essayscore:latest bentoml serve service:EssayScoreService --port 3000
    ESSAYSCORE_RUNTIME=triton ESSAYSCORE_TRITON_URL=127.0.0.1:18000 bentoml serve service:EssayScoreService

Endpoints: POST /score, POST /score_batch, GET|POST /metadata, BentoML's /livez /readyz /metrics /docs.json.
Errors always look like ``{"error": {"code", "message", "field"}}`` (codes in essayscore.api_models); bodies over
the limit get 413, undecodable UTF-8 400 ``invalid_utf8``, pydantic schema errors 400 with a mapped code, and a
model backend that cannot answer 503 ``runtime_unavailable``. The model logic lives in essayscore.runtimes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import bentoml
from starlette.responses import JSONResponse

with bentoml.importing():
    from essayscore import artifacts
    from essayscore import warnings as essay_warnings
    from essayscore.api_models import (ApiGuard, BatchRequest, BatchResponse, MetadataResponse, ScoreRequest,
                                       ScoreResponse, error_body, map_pydantic_error)
    from essayscore.settings import get_settings
    from essayscore.validation import InputError, check_essay

SETTINGS = get_settings()
# The largest legitimate body: a full batch of maximal essays and prompts, every character JSON-escaped (\uXXXX).
MAX_BODY_BYTES = SETTINGS.max_batch_size * (SETTINGS.max_essay_chars + SETTINGS.max_prompt_chars) * 6 + 65_536
API_PATHS = ("/score", "/score_batch", "/metadata")
_SERVICE: "EssayScoreService | None" = None  # the worker's instance, for GET /metadata in the ASGI guard

STAGE_SECONDS = bentoml.metrics.Histogram(
    name="essayscore_stage_seconds", documentation="Latency of each scoring stage (seconds).",
    labelnames=["stage", "runtime"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
PREDICTED_BANDS = bentoml.metrics.Counter(
    name="essayscore_predicted_band", documentation="Predicted IELTS half bands.", labelnames=["band"])


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status)


def band_label(band: float) -> str:
    return "<4" if band < 4.0 else f"{band:g}"


def _store_tag(tag: str) -> bool:
    return ":" in tag and not Path(tag).exists()


@bentoml.service(name="essayscore", workers=SETTINGS.workers, traffic={"timeout": 300, "max_concurrency": 32},
                 resources={"cpu": "2"})
class EssayScoreService:
    if _store_tag(SETTINGS.model_tag):
        model_ref = bentoml.models.BentoModel(SETTINGS.model_tag)  # bundled into the Bento by `bentoml build`

    def __init__(self) -> None:
        global _SERVICE
        from essayscore.explain import Explainer
        from essayscore.runtimes import load_runtime

        self.settings = get_settings()
        self.artifact_dir = artifacts.resolve(self.settings.model_tag, self.settings.artifacts_dir)
        self.runtime = load_runtime(self.settings.runtime, self.artifact_dir)
        self.explainer = Explainer(self.artifact_dir)
        scoring = json.loads((self.artifact_dir / "scoring.json").read_text())
        self.interval_level = float(scoring["interval_level"])
        self.metadata_payload = self._metadata()
        _SERVICE = self

    def __is_ready__(self) -> bool:
        return self.runtime.ready()

    # -- endpoints ------------------------------------------------------------------------------------------
    @bentoml.api(route="/score", output_spec=ScoreResponse)
    def score(self, request: ScoreRequest, /):
        from essayscore.runtimes import RuntimeUnavailable

        try:
            results = self._score_many([request.model_dump()])
        except RuntimeUnavailable as exc:
            return error_response(503, "runtime_unavailable", str(exc))
        ok, payload, status = results[0]
        return ScoreResponse.model_validate(payload) if ok else JSONResponse({"error": payload}, status_code=status)

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
            results = self._score_many(request.items)
        except RuntimeUnavailable as exc:
            return error_response(503, "runtime_unavailable", str(exc))
        return BatchResponse.model_validate({"results": [{"ok": True, "result": p} if ok else {"ok": False, "error": p}
                                                         for ok, p, _ in results]})

    @bentoml.api(route="/metadata", output_spec=MetadataResponse)
    def metadata(self) -> MetadataResponse:
        return MetadataResponse.model_validate(self.metadata_payload)

    # -- glue -----------------------------------------------------------------------------------------------
    def _score_many(self, raw_items: list) -> list[tuple[bool, dict, int]]:
        """Validate, score (one runtime call for all valid items), explain, warn, format. Order preserved."""
        from pydantic import ValidationError

        from essayscore.runtimes import Item

        start = time.perf_counter()
        out: list = [None] * len(raw_items)
        valid: list[tuple[int, ScoreRequest, float]] = []
        for i, raw in enumerate(raw_items):
            t0 = time.perf_counter()
            try:
                req = ScoreRequest.model_validate(raw)
                req.essay, req.prompt = check_essay(req.essay, req.prompt)
                valid.append((i, req, (time.perf_counter() - t0) * 1e3))
            except InputError as exc:
                out[i] = (False, exc.to_dict(), 400)
            except ValidationError as exc:
                out[i] = (False, map_pydantic_error(exc.errors(include_input=False, include_context=False)), 400)
        if valid:
            batch = self.runtime.score([Item(r.essay, r.prompt) for _, r, _ in valid])
            for name, ms in batch.timings_ms.items():
                STAGE_SECONDS.labels(stage=name.removesuffix("_ms"), runtime=self.runtime.name).observe(ms / 1e3)
            for (i, req, validation_ms), scored in zip(valid, batch.scored):
                if isinstance(scored, Exception):
                    out[i] = (False, {"code": "scoring_failed", "message": f"{type(scored).__name__}: {scored}",
                                      "field": "essay"}, 422)
                    continue
                out[i] = (True, self._format(req, scored, {"validation_ms": validation_ms, **batch.timings_ms},
                                             start), 200)
        return out

    def _format(self, req: ScoreRequest, scored, timings: dict, start: float) -> dict:
        r = scored.result
        t0 = time.perf_counter()
        warnings = [w.to_dict() for w in essay_warnings.check(req.essay, req.prompt, scored.handcrafted)]
        t1 = time.perf_counter()
        explanation = self.explainer.explain(scored.x, scored.handcrafted)[0] if req.explain else None
        t2 = time.perf_counter()
        timings = {**timings, "warnings_ms": (t1 - t0) * 1e3}
        if req.explain:
            timings["explain_ms"] = (t2 - t1) * 1e3
        timings["total_ms"] = (time.perf_counter() - start) * 1e3
        for stage in ("warnings", "explain", "total"):
            if f"{stage}_ms" in timings:
                STAGE_SECONDS.labels(stage=stage, runtime=self.runtime.name).observe(timings[f"{stage}_ms"] / 1e3)
        PREDICTED_BANDS.labels(band=band_label(r["ielts_band"])).inc()
        return {
            "essay_id": req.essay_id or "essay-" + hashlib.sha256(req.essay.encode("utf-8")).hexdigest()[:12],
            "ielts_band": r["ielts_band"], "ielts_band_label": band_label(r["ielts_band"]),
            "ielts_raw": r["ielts_raw"],
            "band_interval": {"low": r["band_interval"][0], "high": r["band_interval"][1],
                              "level": self.interval_level},
            "cefr": r["cefr"], "cefr_probabilities": r["cefr_probabilities"],
            "length_adjustment": float(self.explainer.model.length_adjustment(scored.x)[0]),
            "explanation": explanation,
            "issues": [m.to_dict() for m in scored.matches] if req.include_issues else None,
            "warnings": warnings, "model_version": self.runtime.version, "runtime": self.runtime.name,
            "timings": timings,
        }

    def _metadata(self) -> dict:
        d = self.artifact_dir
        config = json.loads((d / "config.json").read_text())
        metrics = json.loads((d / "metrics.json").read_text())
        s = self.settings
        return {
            "model_version": self.runtime.version, "runtime": self.runtime.name,
            "encoder": {**config["encoder"], "backend": self.runtime.encoder_backend},
            "metrics": metrics.get("splits", metrics),
            "feature_registry": json.loads((d / "feature_registry.json").read_text()),
            "interval_level": self.interval_level,
            "limits": {"max_essay_chars": s.max_essay_chars, "max_prompt_chars": s.max_prompt_chars,
                       "max_batch_size": s.max_batch_size, "max_body_bytes": MAX_BODY_BYTES,
                       "min_words_warning": s.min_words_warning},
            **_training_sources(d),
        }


def _training_sources(artifact_dir) -> dict:
    """Sources and inherited licence, without host paths (an artifact from before sources.json names none)."""
    path = artifact_dir / "sources.json"
    if not path.is_file():
        return {"training_sources": [], "licence": ""}
    data = json.loads(path.read_text())
    keep = ("key", "name", "texts", "label_type", "licence", "commercial_use", "citation")
    return {"training_sources": [{k: s[k] for k in keep} for s in data["sources"]], "licence": data["licence"]}


# Body-size limit (413), UTF-8 check, GET /metadata and one error shape for BentoML's own errors (api_models.ApiGuard)
EssayScoreService.add_asgi_middleware(ApiGuard, max_body_bytes=MAX_BODY_BYTES, paths=API_PATHS,
                                      metadata=lambda: _SERVICE.metadata_payload if _SERVICE else None)
