"""A small typed Python client for the essayscore gRPC API (``essayscore grpc-serve``). It returns the same
pydantic models as the HTTP client (:mod:`essayscore.client`), so code can switch transports freely.

Example::

    from essayscore.grpc_api.client import EssayScoreGrpcClient, EssayScoreGrpcError

    with EssayScoreGrpcClient("127.0.0.1:50051") as client:
        client.health()                              # "SERVING" once the model is loaded and its runtime ready
        result = client.score("Some people think that ...", prompt="Discuss both views ...", explain=True)
        print(result.ielts_band_label, result.cefr, result.band_interval.low, result.band_interval.high)
        for w in result.warnings:
            print("warning:", w.code, w.message)
        batch = client.score_batch([{"essay": "First essay ..."}, {"essay": ""}])
        for item in batch.results:
            print(item.result.ielts_band if item.ok else f"error {item.error.code}: {item.error.message}")
        try:
            client.score("   ")
        except EssayScoreGrpcError as exc:
            print(exc.status.name, exc.code, exc.field)   # INVALID_ARGUMENT empty essay

Errors: a non-OK status raises :class:`EssayScoreGrpcError` with the status and the server's error code and field
(trailing metadata ``error-code`` / ``error-field``); a status gRPC itself produced (a message over the size limit,
a server that is down) has the status name in lower case as its code, e.g. ``unavailable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from essayscore.api_models import BatchResponse, MetadataResponse, ScoreRequest, ScoreResponse
from essayscore.grpc_api import convert
from essayscore.grpc_api._gen import essayscore_pb2 as pb
from essayscore.grpc_api._gen import essayscore_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the server's own limits are the ones that matter


class EssayScoreGrpcError(RuntimeError):
    def __init__(self, status: grpc.StatusCode, code: str, message: str, field: str | None = None):
        super().__init__(f"{status.name} {code}: {message}" + (f" (field {field!r})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field

    @classmethod
    def from_rpc_error(cls, exc: grpc.RpcError) -> EssayScoreGrpcError:
        status = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        trailing = dict(exc.trailing_metadata() or ()) if isinstance(exc, grpc.Call) else {}
        details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
        return cls(status, str(trailing.get("error-code", status.name.lower())), details,
                   trailing.get("error-field"))


class EssayScoreGrpcClient:
    def __init__(self, target: str = "127.0.0.1:50051", timeout_s: float = 120.0,
                 channel: grpc.Channel | None = None):
        self.timeout_s = timeout_s
        self._channel = channel or grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        self._stub = pb_grpc.EssayScoreStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # -- API --------------------------------------------------------------------------------------------------
    def score(self, essay: str, prompt: str | None = None, *, essay_id: str | None = None, explain: bool = False,
              include_issues: bool = False) -> ScoreResponse:
        request = pb.ScoreRequest(essay=essay, prompt=prompt, essay_id=essay_id, explain=explain,
                                  include_issues=include_issues)
        return ScoreResponse.model_validate(convert.response_from_proto(self._call(self._stub.Score, request)))

    def score_batch(self, items: Iterable[ScoreRequest | Mapping[str, Any]]) -> BatchResponse:
        """Items as pydantic ScoreRequests or mappings; a value protobuf cannot carry raises TypeError here."""
        request = pb.BatchRequest(items=[convert.request_from_dict(i) for i in items])
        return BatchResponse.model_validate(convert.batch_from_proto(self._call(self._stub.ScoreBatch, request)))

    def metadata(self) -> MetadataResponse:
        answer = self._call(self._stub.Metadata, pb.MetadataRequest())
        return MetadataResponse.model_validate(convert.metadata_from_proto(answer))

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status name: SERVING, NOT_SERVING, SERVICE_UNKNOWN, or UNREACHABLE (no answer)."""
        try:
            answer = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=min(self.timeout_s, 5))
        except grpc.RpcError as exc:
            known = isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND
            return "SERVICE_UNKNOWN" if known else "UNREACHABLE"  # NOT_FOUND: the server has no such service
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def ready(self) -> bool:
        return self.health() == "SERVING"

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise EssayScoreGrpcError.from_rpc_error(exc) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EssayScoreGrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
