"""Between the API's dicts (shaped like :mod:`essayscore.api_models`, what :class:`essayscore.scoring_api.ScoringApi`
returns and the pydantic models validate) and the ``essayscore.v1`` protobuf messages, in both directions.

Where protobuf cannot say what JSON says, the proto has a wrapper: ``issues`` is an ``IssueList`` (unset: not
requested; empty: none found), ``essay`` is ``optional`` (unset: "missing"). ``google.protobuf.Struct`` carries
numbers as doubles; :func:`struct_to_dict` gives integral ones back as ints, as JSON would.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from essayscore.grpc_api._gen import essayscore_pb2 as pb
from essayscore.serving import ItemError

_REQUEST_FIELDS = ("essay", "prompt", "essay_id", "explain", "include_issues")
_OPTIONAL_REQUEST_FIELDS = ("essay", "prompt", "essay_id")
_STRUCT_FIELDS = ("encoder", "metrics")
_STRUCT_LIST_FIELDS = ("feature_registry", "training_sources")


# ---- requests -----------------------------------------------------------------------------------------------------
def parse(message_type: type[Message], data: bytes) -> Message | ItemError:
    """Raw request bytes -> the message, or why they are not one (``invalid_request``, ``wrong_type``)."""
    try:
        message = message_type.FromString(data)
    except DecodeError:
        return ItemError("invalid_request", f"the request is not a valid {message_type.DESCRIPTOR.full_name} "
                                            "message (malformed protobuf, or a string field that is not UTF-8)")
    return message


def wire_error(message: Message) -> ItemError | None:
    """A field sent with the wrong wire type (protobuf keeps it as an unknown field: ``wrong_type``), or a field
    number the schema does not have (``invalid_request``, as an unknown JSON key)."""
    fields = message.DESCRIPTOR.fields_by_number
    for unknown in UnknownFieldSet(message):
        known = fields.get(unknown.field_number)
        if known is not None:
            return ItemError("wrong_type", f"'{known.name}': wrong protobuf wire type {unknown.wire_type}", known.name)
        return ItemError("invalid_request", f"unknown field number {unknown.field_number} in "
                                            f"{message.DESCRIPTOR.full_name}", None)
    return None


def request_to_dict(request: pb.ScoreRequest) -> dict:
    """A ScoreRequest message -> the raw item the one request path validates (unset optional fields left out, so
    an unset essay is "missing" exactly as an absent JSON key)."""
    out: dict[str, Any] = {k: getattr(request, k) for k in _OPTIONAL_REQUEST_FIELDS if request.HasField(k)}
    out["explain"], out["include_issues"] = request.explain, request.include_issues
    return out


def request_from_dict(item: Any) -> pb.ScoreRequest:
    """A mapping (or pydantic ScoreRequest) -> a ScoreRequest message; None values left unset. A value of the wrong
    type raises TypeError here, on the client: protobuf cannot carry it."""
    if hasattr(item, "model_dump"):
        item = item.model_dump(exclude_none=True)
    unknown = set(item) - set(_REQUEST_FIELDS)
    if unknown:
        raise TypeError(f"unknown ScoreRequest field(s): {sorted(unknown)}")
    return pb.ScoreRequest(**{k: v for k, v in item.items() if v is not None})


# ---- responses ----------------------------------------------------------------------------------------------------
def response_to_proto(response: dict) -> pb.ScoreResponse:
    body = dict(response)
    if body.get("issues") is not None:
        body["issues"] = {"items": body["issues"]}
    return json_format.ParseDict(body, pb.ScoreResponse())


def response_from_proto(message: pb.ScoreResponse) -> dict:
    body = _to_dict(message)
    if "issues" in body:
        body["issues"] = body["issues"].get("items", [])
    if "explanation" in body:
        for feature in body["explanation"].get("top_features", []):
            feature.setdefault("value", None)
    return body


def error_to_proto(error: ItemError) -> pb.ErrorDetail:
    return pb.ErrorDetail(code=error.code, message=error.message, field=error.field)


def batch_to_proto(results: list[tuple[ItemError | None, dict | None]]) -> pb.BatchResponse:
    out = pb.BatchResponse()
    for error, response in results:
        if error is not None:
            out.results.add(ok=False, error=error_to_proto(error))
        else:
            assert response is not None
            out.results.add(ok=True, result=response_to_proto(response))
    return out


def batch_from_proto(message: pb.BatchResponse) -> dict:
    results = []
    for r in message.results:
        if r.HasField("result"):
            results.append({"ok": r.ok, "result": response_from_proto(r.result)})
        else:
            error = {"code": r.error.code, "message": r.error.message,
                     "field": r.error.field if r.error.HasField("field") else None}
            results.append({"ok": r.ok, "error": error})
    return {"results": results}


def metadata_to_proto(metadata: dict) -> pb.MetadataResponse:
    return json_format.ParseDict(metadata, pb.MetadataResponse())


def metadata_from_proto(message: pb.MetadataResponse) -> dict:
    body = _to_dict(message)
    for key in _STRUCT_FIELDS:
        body[key] = struct_to_dict(body.get(key, {}))
    for key in _STRUCT_LIST_FIELDS:
        body[key] = [struct_to_dict(x) for x in body.get(key, [])]
    return body


def struct_to_dict(value: Any) -> Any:
    """JSON-like data from a Struct, with integral doubles as ints (Struct has only doubles; JSON has both)."""
    if isinstance(value, dict):
        return {k: struct_to_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [struct_to_dict(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _to_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
