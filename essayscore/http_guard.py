"""ASGI middleware in front of the service's API: content type (415 ``unsupported_media_type``), body-size limit
(413), UTF-8 check of the body (400 ``invalid_utf8``), in-flight limit (429), request timeout (504), one error
shape (:func:`essayscore.api_models.error_body`) for every error answer, BentoML's own included (pydantic 400s,
500, 503), and the truthful OpenAPI document (:mod:`essayscore.openapi`) at ``/docs.json``.

It buffers a POST body once, checks it and replays it to the app. BentoML's own timeout and concurrency
middlewares sit outside this one and answer ``{"error": str}``; this guard answers first (a shorter timeout, its
own in-flight limit) so every answer has the documented shape."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from essayscore.api_models import error_body, map_pydantic_error

_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
                 429: "too_many_requests", 503: "runtime_unavailable", 504: "timeout", 500: "internal_error"}
DOCS_PATH = "/docs.json"


def media_type_error(content_type: bytes | None, body_follows: bool) -> str | None:
    """Why a request's Content-Type is refused (None when it is JSON in UTF-8, or absent with no body)."""
    if content_type is None:
        return "a request body needs 'Content-Type: application/json'" if body_follows else None
    text = content_type.decode("latin-1")
    media, *params = [part.strip() for part in text.split(";")]
    if media.lower() != "application/json":
        return f"the content type {text[:100]!r} is not supported; send 'application/json'"
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"the charset {value.strip()[:40]!r} is not supported; send UTF-8"
    return None


class ApiGuard:
    """ASGI middleware in front of the API paths (see the module docstring); ``openapi`` holds the keyword
    arguments of :func:`essayscore.openapi.truthful_spec` (the limits), None to leave /docs.json alone."""

    def __init__(self, app, max_body_bytes: int, paths: tuple[str, ...] = ("/score", "/score_batch", "/metadata"),
                 max_concurrency: int | None = None, timeout_s: float | None = None,
                 openapi: dict[str, Any] | None = None, release_busy_connections: bool = False):
        self.app, self.max_body_bytes, self.paths = app, max_body_bytes, paths
        self.max_concurrency, self.timeout_s, self.openapi = max_concurrency, timeout_s, openapi
        self.release_busy_connections = release_busy_connections
        self.in_flight = 0
        self._spec: bytes | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == DOCS_PATH and scope["method"] in ("GET", "HEAD") and self.openapi is not None:
            return await self._docs(scope, receive, send)
        if scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            return await self._json(send, 429, error_body(
                "too_many_requests", f"{self.in_flight} requests are in flight on this worker; retry later", None),
                [(b"retry-after", b"1")])
        self.in_flight += 1
        try:
            return await self._guarded(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope, receive, send):
        if scope["method"] == "POST":
            headers = dict(scope.get("headers") or [])
            try:
                declared = int(headers.get(b"content-length", b"0"))
            except ValueError:
                declared = 0
            refused = media_type_error(headers.get(b"content-type"),
                                       declared > 0 or b"transfer-encoding" in headers)
            if refused is not None:
                return await self._json(send, 415, error_body("unsupported_media_type", refused, None))
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body = message.get("body", b"")
                size += len(body)
                if size <= self.max_body_bytes and declared <= self.max_body_bytes:
                    chunks.append(body)
                more = message.get("more_body", False)
                if size > 16 * self.max_body_bytes:  # stop draining an absurd body; the connection is closed
                    break
            if size > self.max_body_bytes or declared > self.max_body_bytes:
                return await self._json(send, 413, error_body(
                    "body_too_large", f"the request body has {max(size, declared)} bytes; the limit is "
                                      f"{self.max_body_bytes}", None))
            body = b"".join(chunks)
            if body and headers.get(b"content-type") is None:
                return await self._json(send, 415, error_body(
                    "unsupported_media_type", "a request body needs 'Content-Type: application/json'", None))
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                return await self._json(send, 400, error_body(
                    "invalid_utf8", f"the request body is not valid UTF-8 (byte {exc.start})", None))
            replayed = False

            async def receive():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return {"type": "http.disconnect"}

        start_message = None
        buffered = []
        started = timed_out = False

        async def send_wrapper(message):
            nonlocal start_message, started
            if timed_out:
                return
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:
                    start_message = message
                    return
                if self.release_busy_connections and self.in_flight > 1:
                    # this worker is busy: the client's next request reconnects, and the worker that accepts
                    # first (the idle one) gets it; keep-alive would otherwise pin clients to one worker
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
                return await send(message)
            if message["type"] == "http.response.body" and start_message is not None:
                buffered.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                status = start_message["status"]
                payload = _normalise_error(status, b"".join(buffered))
                return await self._json(send, status, payload, start_message.get("headers"))
            return await send(message)

        if self.timeout_s is None:
            return await self.app(scope, receive, send_wrapper)
        task = asyncio.ensure_future(self.app(scope, receive, send_wrapper))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
        except asyncio.TimeoutError:
            if started:  # the answer has begun: let it finish
                return await task
            timed_out = True
            task.cancel()
            return await self._json(send, 504, error_body(
                "timeout", f"the request was not answered within {self.timeout_s:g} seconds", None))

    async def _docs(self, scope, receive, send):
        """BentoML's /docs.json, rewritten by essayscore.openapi.truthful_spec (built once per process)."""
        if self._spec is None:
            status, raw = await _capture(self.app, scope, receive)
            if status != 200:
                return await self._json(send, 500, error_body("internal_error", "no OpenAPI document", None))
            from essayscore.openapi import truthful_spec

            self._spec = json.dumps(truthful_spec(json.loads(raw), **(self.openapi or {}))).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._spec)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else self._spec})

    @staticmethod
    async def _json(send, status: int, payload: dict, original_headers=None) -> None:
        data = json.dumps(payload).encode("utf-8")
        headers = [(k, v) for k, v in (original_headers or [])
                   if k.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


async def _capture(app, scope, receive) -> tuple[int, bytes]:
    """Run ``app`` on a GET of the same path and collect its answer."""
    status, chunks = 500, []

    async def collect(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app({**scope, "method": "GET"}, receive, collect)
    return status, b"".join(chunks)


def _normalise_error(status: int, raw: bytes) -> dict:
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = {"error": raw.decode("utf-8", "replace")}
    if isinstance(payload, list) and payload:  # BentoML answers some 4xx as a one-element list
        payload = payload[0]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and "code" in error:
        return payload  # already ours
    if isinstance(payload, dict) and isinstance(payload.get("detail"), list):
        return {"error": map_pydantic_error(payload["detail"])}
    code = _STATUS_CODES.get(status, "internal_error" if status >= 500 else "invalid_request")
    return error_body(code, str(error if error is not None else payload), None)
