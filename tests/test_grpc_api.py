"""The gRPC API end to end: a real ``essayscore grpc-serve`` subprocess (:class:`devtools.servers.GrpcServer`) on
the session's trained artifact, against the embedded Bento (conftest's ``bento`` / ``client``) on the same model:
the same answers, every validation rule mapped to its status, health following the runtime."""

from __future__ import annotations

import pytest

grpc = pytest.importorskip("grpc")

from devtools.servers import GrpcServer, free_port
from essayscore.api_models import ScoreResponse
from essayscore.grpc_api._gen import essayscore_pb2 as pb
from essayscore.grpc_api.client import EssayScoreGrpcError

try:
    from test_service import VALIDATION_CASES
except ImportError:  # tests/ imported as a package
    from tests.test_service import VALIDATION_CASES

pytestmark = pytest.mark.slow

N_ESSAYS = 4


@pytest.fixture(scope="module")
def grpc_server(trained_artifact):
    with GrpcServer(trained_artifact, ESSAYSCORE_RUNTIME="embedded") as server:
        yield server


@pytest.fixture(scope="module")
def stub(grpc_server):
    with grpc_server.client() as c:
        yield c


def raw_call(server: GrpcServer, method: str, data: bytes, timeout_s: float = 60.0):
    """Call an RPC with hand-made request bytes (what a typed client cannot send); returns the grpc.RpcError."""
    with grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(f"/essayscore.v1.EssayScore/{method}")  # no serializers: bytes in and out
        with pytest.raises(grpc.RpcError) as info:
            call(data, timeout=timeout_s)
    return info.value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_request(payload: dict) -> bytes:
    """A JSON-style payload as ScoreRequest bytes; a value of the wrong type goes on the wire with the wire type of
    its JSON type (an int as a varint, anything else length-delimited), an unknown key as field 99."""
    message, extra = pb.ScoreRequest(), b""
    for key, value in payload.items():
        try:
            setattr(message, key, value)
            continue
        except (TypeError, ValueError, AttributeError):
            pass
        field = pb.ScoreRequest.DESCRIPTOR.fields_by_name.get(key)
        number = field.number if field is not None else 99
        if isinstance(value, int):
            extra += _varint(number << 3) + _varint(value)
        else:
            data = str(value).encode()
            extra += _varint(number << 3 | 2) + _varint(len(data)) + data
    return message.SerializeToString() + extra


def assert_same(http: dict, via_grpc: ScoreResponse) -> None:
    g = via_grpc.model_dump()
    h = ScoreResponse.model_validate(http).model_dump()
    for key in ("essay_id", "ielts_band", "ielts_band_label", "cefr", "band_interval", "warnings", "issues",
                "model_version", "runtime"):
        assert g[key] == h[key], key
    assert g["ielts_raw"] == pytest.approx(h["ielts_raw"], abs=1e-6)
    assert g["length_adjustment"] == pytest.approx(h["length_adjustment"], abs=1e-6)
    assert g["cefr_probabilities"] == pytest.approx(h["cefr_probabilities"], abs=1e-6)
    assert set(g["timings"]) == set(h["timings"])
    if h["explanation"] is None:
        assert g["explanation"] is None
        return
    ge, he = g["explanation"], h["explanation"]
    assert ge["groups"] == pytest.approx(he["groups"], abs=1e-6)
    assert ge["base_value"] == pytest.approx(he["base_value"], abs=1e-6)
    assert ge["output"] == pytest.approx(he["output"], abs=1e-6)
    assert [(f["name"], f["direction"]) for f in ge["top_features"]] == \
        [(f["name"], f["direction"]) for f in he["top_features"]]


# ---------------------------------------------------------------------------------------------------------------
def test_health_is_serving(stub, grpc_server) -> None:
    assert stub.health() == "SERVING" and stub.health("essayscore.v1.EssayScore") == "SERVING"
    assert stub.health("no.such.Service") == "SERVICE_UNKNOWN"


def test_same_answers_as_http(stub, client, cases) -> None:
    for i, (essay, prompt) in enumerate(cases):
        explain, issues = i % 2 == 0, i % 3 != 1
        http = client.post("/score", json={"essay": essay, "prompt": prompt, "explain": explain,
                                           "include_issues": issues})
        assert http.status_code == 200, http.text
        assert_same(http.json(), stub.score(essay, prompt=prompt, explain=explain, include_issues=issues))
    essay, prompt = cases[-1]
    assert stub.score(essay, essay_id="student-42").essay_id == "student-42"
    assert stub.score(essay, include_issues=True).issues is not None and stub.score(essay).issues is None


def test_same_batch_as_http(stub, client, cases) -> None:
    items = [{"essay": cases[0][0], "prompt": cases[0][1], "essay_id": "a", "explain": True}, {"essay": ""},
             {"prompt": "no essay"}, {"essay": cases[1][0], "include_issues": True}, {"essay": "x\x07y"}]
    http = client.post("/score_batch", json={"items": items})
    assert http.status_code == 200, http.text
    via_grpc = stub.score_batch(items).results
    assert [r.ok for r in via_grpc] == [r["ok"] for r in http.json()["results"]] == [True, False, False, True, False]
    for g, h in zip(via_grpc, http.json()["results"]):
        if h["ok"]:
            assert_same(h["result"], g.result)
        else:
            assert g.error.model_dump() == h["error"]


def test_same_metadata_as_http(stub, client) -> None:
    http = client.get("/metadata").json()
    assert stub.metadata().model_dump() == http


@pytest.mark.parametrize("name,payload,status,code,field", VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES])
def test_validation_rules(grpc_server, stub, name, payload, status, code, field) -> None:
    error = raw_call(grpc_server, "Score", encode_request(payload))
    trailing = dict(error.trailing_metadata())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert trailing["error-code"] == code and error.details()
    if code != "invalid_request":  # an unknown field has a number on the wire, not a name
        assert trailing.get("error-field") == field
    if all(isinstance(v, str | bool) for v in payload.values()) and set(payload) <= {"essay", "prompt"}:
        with pytest.raises(EssayScoreGrpcError) as info:  # the typed client says the same
            stub.score(payload.get("essay"), prompt=payload.get("prompt"))
        assert (info.value.status, info.value.code, info.value.field) == (grpc.StatusCode.INVALID_ARGUMENT, code,
                                                                          field)


def test_batch_rules(grpc_server, stub) -> None:
    with pytest.raises(EssayScoreGrpcError) as info:
        stub.score_batch([{"essay": "An essay."}] * 33)
    assert (info.value.status, info.value.code, info.value.field) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                                      "batch_too_large", "items")
    with pytest.raises(EssayScoreGrpcError) as info:
        stub.score_batch([])
    assert (info.value.status, info.value.code, info.value.field) == (grpc.StatusCode.INVALID_ARGUMENT, "empty",
                                                                      "items")
    # an item with a wrong wire type fails alone, in its place
    batch = pb.BatchRequest(items=[pb.ScoreRequest(essay="")]).SerializeToString()
    bad_item = encode_request({"essay": 5})
    data = batch + b"\x0a" + bytes([len(bad_item)]) + bad_item
    with grpc.insecure_channel(grpc_server.target) as channel:
        answer = pb.BatchResponse.FromString(channel.unary_unary("/essayscore.v1.EssayScore/ScoreBatch")(data))
    assert [(r.ok, r.error.code, r.error.field) for r in answer.results] == [(False, "empty", "essay"),
                                                                           (False, "wrong_type", "essay")]


def test_malformed_and_oversized_messages(grpc_server) -> None:
    error = raw_call(grpc_server, "Score", b"\x0a\x05ab")  # a length beyond the end
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata())["error-code"] == "invalid_request"
    error = raw_call(grpc_server, "Score", pb.ScoreRequest(essay="a" * 5_000_000).SerializeToString())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # over max_body_bytes, refused by gRPC itself


def test_health_follows_an_unavailable_runtime(trained_artifact) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    with GrpcServer(trained_artifact, wait_for="loaded", ESSAYSCORE_RUNTIME="triton", ESSAYSCORE_TRITON_URL=down,
                    ESSAYSCORE_TRITON_RETRIES="0", ESSAYSCORE_TRITON_TIMEOUT_S="2") as server, \
            server.client(timeout_s=60) as c:
        assert c.health() == "NOT_SERVING" and c.health("essayscore.v1.EssayScore") == "NOT_SERVING"
        assert c.metadata().runtime == "triton"
        with pytest.raises(EssayScoreGrpcError) as info:
            c.score("Some people think that zoos should be closed. I disagree, because zoos protect animals.")
        assert (info.value.status, info.value.code) == (grpc.StatusCode.UNAVAILABLE, "runtime_unavailable")
        with pytest.raises(EssayScoreGrpcError) as info:
            c.score("   ")  # input is still checked first, as over HTTP
        assert info.value.code == "empty"
