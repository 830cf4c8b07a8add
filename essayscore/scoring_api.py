"""The scoring API without a transport: what the HTTP service (``service.py``) answers, in plain dicts shaped like
:mod:`essayscore.api_models`. A second transport (gRPC) calls the same object, so both give the same answers.

:meth:`ScoringApi.score_many` takes the one request path (:func:`essayscore.serving.score_requests`), then adds
each scored item's warnings, explanation, interval level, essay id and timings, and records it for drift monitoring
(:class:`essayscore.monitoring.RequestMonitor`: the request log, the rolling PSI window). :meth:`ScoringApi.check_batch`
holds the batch rules; :attr:`ScoringApi.metadata` the model's metadata (no host paths).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from essayscore import essay_warnings
from essayscore.artifacts import Artifact
from essayscore.monitoring import RequestMonitor
from essayscore.serving import ItemError, Outcome, score_requests
from essayscore.settings import Settings, get_settings

Observe = Callable[[str, float], None]  # (stage, seconds): where the transport records stage latencies


def max_body_bytes(settings: Settings) -> int:
    """The largest legitimate request body: a full batch of maximal essays and prompts, every character
    JSON-escaped (\\uXXXX), plus room for the other fields."""
    return settings.max_batch_size * (settings.max_essay_chars + settings.max_prompt_chars) * 6 + 65_536


class ScoringApi:
    def __init__(self, settings: Settings | None = None):
        from essayscore.explain import Explainer
        from essayscore.runtimes import load_runtime

        self.settings = settings or get_settings()
        self.artifact = Artifact.open(self.settings.model_tag, self.settings.artifacts_dir)
        self.runtime = load_runtime(self.settings.runtime, self.artifact)
        self.explainer = Explainer(self.artifact)
        # every scored essay, whichever transport: the request log and the rolling drift window (the Bento adds
        # its Prometheus metrics with self.monitor.export_to)
        self.monitor = RequestMonitor(self.artifact, self.settings)
        self.metadata = self._metadata()

    def ready(self) -> bool:
        return self.runtime.ready()

    def check_batch(self, items: Sequence[Any]) -> ItemError | None:
        """Why a whole batch is refused (too many or no items), or None."""
        limit = self.settings.max_batch_size
        if len(items) > limit:
            return ItemError("batch_too_large", f"the batch has {len(items)} items; the limit is {limit}", "items")
        if not items:
            return ItemError("empty", "'items' is empty", "items")
        return None

    def score_many(self, raw_items: Sequence[Any], observe: Observe | None = None,
                   on_band: Callable[[str], None] | None = None) -> list[tuple[Outcome, dict | None]]:
        """Each item's outcome and, when it was scored, its response body (a ScoreResponse dict). Order preserved;
        raises RuntimeUnavailable when the runtime cannot answer at all."""
        start = time.perf_counter()
        collected = score_requests(self.runtime, raw_items)
        if observe is not None:
            for name, ms in collected.timings_ms.items():
                observe(name.removesuffix("_ms"), ms / 1e3)
        out = []
        for outcome in collected.outcomes:
            response = None
            if outcome.result is not None:
                timings = {"validation_ms": outcome.validation_ms, **collected.timings_ms}
                response = self._response(outcome, timings, start, observe)
                if on_band is not None:
                    on_band(response["ielts_band_label"])
                assert outcome.request is not None and outcome.result is not None
                self.monitor.record(outcome.result, self.runtime.name, response["timings"]["total_ms"],
                                    outcome.request.essay)
            out.append((outcome, response))
        return out

    def _response(self, outcome: Outcome, timings: dict, start: float, observe: Observe | None) -> dict:
        req, r = outcome.request, outcome.result
        assert req is not None and r is not None  # only scored outcomes get a response
        t0 = time.perf_counter()
        warnings = [w.to_dict() for w in essay_warnings.check(req.essay, req.prompt, r.handcrafted)]
        t1 = time.perf_counter()
        explanation = self.explainer.explain(r.feature_vector, r.handcrafted)[0] if req.explain else None
        t2 = time.perf_counter()
        timings = {**timings, "warnings_ms": (t1 - t0) * 1e3}
        if req.explain:
            timings["explain_ms"] = (t2 - t1) * 1e3
        timings["total_ms"] = (time.perf_counter() - start) * 1e3
        if observe is not None:
            for stage in ("warnings", "explain", "total"):
                if f"{stage}_ms" in timings:
                    observe(stage, timings[f"{stage}_ms"] / 1e3)
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

        def no_paths(value):  # e.g. an encoder loaded from a local folder is named by its path: keep the last part
            if isinstance(value, dict):
                return {k: no_paths(v) for k, v in value.items()}
            if isinstance(value, list):
                return [no_paths(v) for v in value]
            if isinstance(value, str) and (value.startswith(("/", "~")) or value[1:3] in (":\\", ":/")):
                return value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
            return value

        return no_paths({
            "model_version": self.runtime.version, "runtime": self.runtime.name,
            "encoder": {**a.encoder_config, "backend": self.runtime.encoder_backend},
            "metrics": a.metrics.get("splits", a.metrics),
            "feature_registry": a.registry,
            "interval_level": a.interval_level,
            "limits": {"max_essay_chars": s.max_essay_chars, "max_prompt_chars": s.max_prompt_chars,
                       "max_batch_size": s.max_batch_size, "max_body_bytes": max_body_bytes(s),
                       "min_words_warning": s.min_words_warning},
            "training_sources": [{k: src[k] for k in keep} for src in sources["sources"]],
            "licence": sources["licence"],
        })
