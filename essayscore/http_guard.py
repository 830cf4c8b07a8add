"""ASGI middleware in front of the service's API: body-size limit (413), UTF-8 check of the body (400
``invalid_utf8``), and one error shape (:func:`essayscore.api_models.error_body`) for every error answer, BentoML's
own included (pydantic 400s, 429, 500, 503). It buffers a POST body once, checks it and replays it to the app."""

from __future__ import annotations

import json

from essayscore.api_models import error_body, map_pydantic_error

_STATUS_CODES = {413: "body_too_large", 429: "too_many_requests", 503: "runtime_unavailable", 500: "internal_error"}


class ApiGuard:
    """ASGI middleware in front of the API paths: body-size limit (413), UTF-8 check, and one error shape for
    BentoML's own error bodies (pydantic 400s, 429, 500, 503)."""

    def __init__(self, app, max_body_bytes: int, paths: tuple[str, ...] = ("/score", "/score_batch", "/metadata")):
        self.app, self.max_body_bytes, self.paths = app, max_body_bytes, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if scope["method"] == "POST":
            headers = dict(scope.get("headers") or [])
            try:
                declared = int(headers.get(b"content-length", b"0"))
            except ValueError:
                declared = 0
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
        buffered: list[bytes] = []

        async def send_wrapper(message):
            nonlocal start_message
            if message["type"] == "http.response.start":
                if message["status"] >= 400:
                    start_message = message
                    return
                return await send(message)
            if message["type"] == "http.response.body" and start_message is not None:
                buffered.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                status = start_message["status"]
                payload = _normalise_error(status, b"".join(buffered))
                return await self._json(send, status, payload, start_message.get("headers"))
            return await send(message)

        return await self.app(scope, receive, send_wrapper)

    @staticmethod
    async def _json(send, status: int, payload: dict, original_headers=None) -> None:
        data = json.dumps(payload).encode("utf-8")
        headers = [(k, v) for k, v in (original_headers or [])
                   if k.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


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
