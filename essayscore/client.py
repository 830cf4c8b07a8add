"""A small typed Python client for the essayscore HTTP API (the Bento in ``service.py``).

Example::

    from essayscore.client import EssayScoreClient, EssayScoreError

    with EssayScoreClient("http://127.0.0.1:3000") as client:
        result = client.score("Some people think that ...", prompt="Discuss both views ...", explain=True)
        print(result.ielts_band_label, result.cefr, result.band_interval.low, result.band_interval.high)
        for w in result.warnings:
            print("warning:", w.code, w.message)
        batch = client.score_batch([{"essay": "First essay ..."}, {"essay": ""}])
        for item in batch.results:
            print(item.result.ielts_band if item.ok else f"error {item.error.code}: {item.error.message}")
        try:
            client.score("   ")
        except EssayScoreError as exc:
            print(exc.status, exc.code, exc.field)   # 400 empty essay
        client.ready()                               # GET /readyz == 200

Errors: any non-2xx answer raises :class:`EssayScoreError` with the service's ``{"error": {code, message, field}}``
(503 ``runtime_unavailable`` when the model backend is down; 413 ``body_too_large``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from essayscore.api_models import BatchResponse, MetadataResponse, ScoreRequest, ScoreResponse


class EssayScoreError(RuntimeError):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(f"{status} {code}: {message}" + (f" (field {field!r})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field


class EssayScoreClient:
    def __init__(self, base_url: str = "http://127.0.0.1:3000", timeout_s: float = 120.0,
                 client: httpx.Client | None = None):
        self._http = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)

    # -- API --------------------------------------------------------------------------------------------------
    def score(self, essay: str, prompt: str | None = None, *, essay_id: str | None = None, explain: bool = False,
              include_issues: bool = False) -> ScoreResponse:
        request = ScoreRequest(essay=essay, prompt=prompt, essay_id=essay_id, explain=explain,
                               include_issues=include_issues)
        return ScoreResponse.model_validate(self._post("/score", request.model_dump(exclude_none=True)))

    def score_batch(self, items: Iterable[ScoreRequest | Mapping[str, Any]]) -> BatchResponse:
        payload = [i.model_dump(exclude_none=True) if isinstance(i, ScoreRequest) else dict(i) for i in items]
        return BatchResponse.model_validate(self._post("/score_batch", {"items": payload}))

    def metadata(self) -> MetadataResponse:
        return MetadataResponse.model_validate(self._check(self._http.get("/metadata")))

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        try:
            return self._http.get("/livez").status_code == 200
        except httpx.HTTPError:
            return False

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _post(self, path: str, payload: dict) -> Any:
        return self._check(self._http.post(path, json=payload))

    @staticmethod
    def _check(response: httpx.Response) -> Any:
        if response.is_success:
            return response.json()
        try:
            error = response.json()["error"]
            if not isinstance(error, dict):
                error = {"code": "error", "message": str(error)}
        except (ValueError, KeyError, TypeError):
            error = {"code": "http_error", "message": response.text[:500]}
        raise EssayScoreError(response.status_code, error.get("code", "error"), error.get("message", ""),
                              error.get("field"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EssayScoreClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
