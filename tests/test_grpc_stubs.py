"""The gRPC stubs (essayscore/grpc_api/_gen) are what scripts/gen_grpc.sh makes of the proto, byte for byte, and
the message conversions keep what JSON says (fast: no server; the server tests are tests/test_grpc_api.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from essayscore.grpc_api import convert
from essayscore.grpc_api._gen import essayscore_pb2 as pb

REPO = Path(__file__).resolve().parent.parent
GEN = REPO / "essayscore" / "grpc_api" / "_gen"


def test_regenerating_the_stubs_gives_the_committed_files(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) generates the stubs")
    run = subprocess.run(["bash", str(REPO / "scripts" / "gen_grpc.sh"), str(tmp_path)], capture_output=True,
                         text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert run.returncode == 0, run.stderr
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in GEN.iterdir() if p.is_file()), "files differ from scripts/gen_grpc.sh's"
    drifted = [name for name in fresh if (tmp_path / name).read_bytes() != (GEN / name).read_bytes()]
    assert not drifted, f"{drifted} differ from what scripts/gen_grpc.sh generates: run it, never edit them by hand"


def test_request_fields_left_unset_stay_absent():
    assert convert.request_to_dict(pb.ScoreRequest()) == {"explain": False, "include_issues": False}
    assert convert.request_to_dict(pb.ScoreRequest(essay="", prompt="p")) == {
        "essay": "", "prompt": "p", "explain": False, "include_issues": False}


def test_wrong_wire_types_and_unknown_fields_are_named():
    wrong = pb.ScoreRequest.FromString(b"\x08\x05")  # field 1 (essay) sent as a varint
    assert convert.wire_error(wrong).code == "wrong_type" and convert.wire_error(wrong).field == "essay"
    unknown = pb.ScoreRequest.FromString(b"\xa8\x06\x01")  # field 101
    assert convert.wire_error(unknown).code == "invalid_request"
    assert convert.wire_error(pb.ScoreRequest(essay="An essay.")) is None
    assert convert.parse(pb.ScoreRequest, b"\x0a\x02\xff\xfe").code == "invalid_request"  # not UTF-8


def test_response_round_trip_keeps_none_and_empty_apart():
    from essayscore.api_models import ScoreResponse

    body = ScoreResponse.model_json_schema()["example"]
    for issues in (None, [], [{"offset": 3, "length": 2, "category": "spelling", "message": "m",
                               "suggestions": ["a"], "rule_id": "r"}]):
        sent = ScoreResponse.model_validate({**body, "issues": issues}).model_dump()
        back = ScoreResponse.model_validate(convert.response_from_proto(convert.response_to_proto(sent)))
        assert back.model_dump() == sent


def test_struct_numbers_come_back_as_json_numbers():
    assert convert.struct_to_dict({"window": 256.0, "qwk": 0.5, "l": [1.0, {"x": 2.0}]}) == {
        "window": 256, "qwk": 0.5, "l": [1, {"x": 2}]}
    assert isinstance(convert.struct_to_dict(256.0), int)
