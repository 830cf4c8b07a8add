"""The Bento end to end: a real ``bentoml serve service:EssayScoreService`` subprocess (embedded runtime) on the
session's trained artifact, driven over HTTP with httpx. The server is conftest's session ``bento``
(:class:`devtools.servers.BentoServer`), shared with the load tests; ``client`` is conftest's too."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(shared_essays):
    """Three real essays with their prompts, from low to high band."""
    rows = shared_essays.sort_values("band").reset_index(drop=True)
    picks = rows.iloc[[len(rows) // 10, len(rows) // 2, 9 * len(rows) // 10]]
    return [(r.essay, r.prompt) for r in picks.itertuples()]


FRENCH = ("Aujourd'hui, beaucoup de gens pensent que les enfants devraient apprendre une langue étrangère dès "
          "l'école primaire. À mon avis, c'est une excellente idée, car les jeunes enfants apprennent plus "
          "facilement. Cependant, il faut aussi reconnaître que les enseignants ne sont pas toujours bien formés et "
          "que les écoles manquent de moyens pour acheter des livres et payer les professeurs.")
GIBBERISH = "asdkj qwpoe zmxnv lkjhg poiuy trewq mnbvc xzlkj hgfds aqwsx edcrf vtgby hnujm ikolp qazws xedcv"
ZOO_PROMPT = ("Some people think that zoos are cruel to wild animals and should be closed, while others believe "
              "zoos protect endangered species. Discuss both views and give your opinion.")


# ---------------------------------------------------------------------------------------------------------------
def test_health_endpoints(client) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_score_response(client, real, bento) -> None:
    essay, prompt = real[1]
    r = client.post("/score", json={"essay": essay, "prompt": prompt, "essay_id": "e-1"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["essay_id"] == "e-1"
    assert d["model_version"] == bento.version and d["runtime"] == "embedded"
    assert 3.5 <= d["ielts_band"] <= 9.0 and (d["ielts_band"] * 2).is_integer()
    assert d["ielts_band_label"] == ("<4" if d["ielts_band"] == 3.5 else f"{d['ielts_band']:g}")
    iv = d["band_interval"]
    assert iv["low"] <= d["ielts_band"] <= iv["high"] and iv["level"] == 0.9
    assert set(d["cefr_probabilities"]) == {"A1", "A2", "B1", "B2", "C1", "C2"}
    assert sum(d["cefr_probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert d["cefr"] in d["cefr_probabilities"]
    assert d["explanation"] is None and d["issues"] is None
    assert isinstance(d["warnings"], list)
    n_words = len(essay.split())
    assert d["length_adjustment"] <= 0 and (n_words < 240 or n_words >= 260)  # a real essay clearly on one side
    assert (d["length_adjustment"] == 0) == (n_words >= 260)
    assert {"validation_ms", "features_ms", "tokenise_ms", "encoder_ms", "trees_ms", "total_ms"} <= set(d["timings"])
    # no essay_id: a stable one derived from the text
    again = client.post("/score", json={"essay": essay, "prompt": prompt}).json()
    assert again["essay_id"].startswith("essay-") and again["ielts_raw"] == d["ielts_raw"]


def test_shap_additivity_through_the_api(client, real) -> None:
    for essay, prompt in real:
        d = client.post("/score", json={"essay": essay, "prompt": prompt, "explain": True}).json()
        e = d["explanation"]
        assert e["base_value"] + sum(e["groups"].values()) == pytest.approx(d["ielts_raw"], abs=1e-4)
        assert e["output"] == pytest.approx(d["ielts_raw"], abs=1e-4)
        assert "semantic_content" in e["groups"] and e["top_features"]
        assert "explain_ms" in d["timings"]


def test_issues_offsets_are_into_the_essay_as_sent(client) -> None:
    essay = ("  \u201cSchools\u201d  are important becuase they teach children many things.\n\n   I beleive that "
             "every child should go to school, and there parents should help them with there homework.")
    d = client.post("/score", json={"essay": essay, "include_issues": True}).json()
    issues = d["issues"]
    assert issues, d
    spans = [essay[i["offset"]: i["offset"] + i["length"]] for i in issues]
    assert "becuase" in spans and "beleive" in spans, spans
    for i in issues:
        assert {"offset", "length", "category", "message", "suggestions", "rule_id"} <= set(i)


VALIDATION_CASES = [
    ("missing", {"prompt": "x"}, 400, "missing", "essay"),
    ("empty", {"essay": ""}, 400, "empty", "essay"),
    ("whitespace", {"essay": " \n\t  "}, 400, "empty", "essay"),
    ("no_letters", {"essay": "123 456 !!! 789"}, 400, "no_letters", "essay"),
    ("too_long", {"essay": "word " * 4001}, 400, "too_long", "essay"),
    ("wrong_type", {"essay": 123}, 400, "wrong_type", "essay"),
    ("wrong_type_flag", {"essay": "An essay.", "explain": "perhaps"}, 400, "wrong_type", "explain"),
    ("control_characters", {"essay": "An essay\x00 with a NUL."}, 400, "control_characters", "essay"),
    ("prompt_too_long", {"essay": "An essay.", "prompt": "p" * 2001}, 400, "too_long", "prompt"),
    ("unknown_field", {"essay": "An essay.", "essai": "typo"}, 400, "invalid_request", "essai"),
]


@pytest.mark.parametrize("name,payload,status,code,field", VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES])
def test_validation_rules(client, name, payload, status, code, field) -> None:
    r = client.post("/score", json=payload)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["field"] == field and err["message"]


@pytest.mark.parametrize("body,status,code", [
    (b'{"essay": "caf\xe9 \xff is not UTF-8"}', 400, "invalid_utf8"),
    (b'{"essay": ', 400, "invalid_json"),
    (b'{"essay": "' + b"a" * 5_000_000 + b'"}', 413, "body_too_large"),
], ids=["invalid_utf8", "invalid_json", "oversized_body"])
def test_raw_body_rules(client, body, status, code) -> None:
    r = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text[:300]
    assert r.json()["error"]["code"] == code


def test_batch_partial_failure_keeps_order(client, real) -> None:
    items = [{"essay": real[0][0], "prompt": real[0][1], "essay_id": "a"}, {"essay": ""}, {"essay": 5}, "not an object",
             {"essay": real[2][0], "essay_id": "b", "explain": True}, {"essay": "x\x07y"}]
    r = client.post("/score_batch", json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, False, False, False, True, False]
    assert [x["error"]["code"] for x in results if not x["ok"]] == ["empty", "wrong_type", "wrong_type",
                                                                     "control_characters"]
    assert results[0]["result"]["essay_id"] == "a" and results[4]["result"]["essay_id"] == "b"
    assert results[4]["result"]["explanation"] is not None
    single = client.post("/score", json={"essay": real[2][0]}).json()
    assert single["ielts_raw"] == pytest.approx(results[4]["result"]["ielts_raw"], abs=1e-5)


def test_batch_limits(client) -> None:
    r = client.post("/score_batch", json={"items": [{"essay": "An essay."}] * 33})
    assert r.status_code == 400 and r.json()["error"]["code"] == "batch_too_large"
    r = client.post("/score_batch", json={"items": []})
    assert r.status_code == 400 and r.json()["error"]["field"] == "items"
    r = client.post("/score_batch", json={"items": "nope"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_type"


def test_warnings_on_planted_cases(client, real) -> None:
    def codes(payload):
        r = client.post("/score", json=payload)
        assert r.status_code == 200, r.text
        return {w["code"] for w in r.json()["warnings"]}

    essay, prompt = real[1]
    assert codes({"essay": essay, "prompt": prompt}) == set()
    assert codes({"essay": "Schools are good. Children learn many useful things there every day."}) == {"too_short"}
    assert "off_topic" in codes({"essay": essay, "prompt": ZOO_PROMPT})
    assert "not_english" in codes({"essay": FRENCH})
    assert "not_english" in codes({"essay": GIBBERISH})


def test_metadata(client, bento) -> None:
    for r in (client.get("/metadata"), client.post("/metadata", json={})):
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["model_version"] == bento.version and d["runtime"] == "embedded"
        assert {"train", "validation", "test"} <= set(d["metrics"])
        assert d["feature_registry"] and {"name", "group", "description"} <= set(d["feature_registry"][0])
        assert d["encoder"]["name"] and d["limits"]["max_batch_size"] == 32 and d["interval_level"] == 0.9
        # every training source and the licence the model inherits, without host paths
        assert [s["key"] for s in d["training_sources"]] == ["ielts", "wi"]
        assert d["training_sources"][1]["commercial_use"] is False and "non-commercial" in d["licence"]
        assert "/tmp/" not in r.text and "/work/" not in r.text


def test_openapi_published(client) -> None:
    spec = client.get("/docs.json")
    assert spec.status_code == 200, spec.text
    d = spec.json()
    assert {"/score", "/score_batch", "/metadata", "/readyz", "/metrics"} <= set(d["paths"])
    text = json.dumps(d)
    assert "include_issues" in text and "ielts_band_label" in text


def test_metrics_show_stage_histograms(client, real) -> None:
    client.post("/score", json={"essay": real[0][0], "explain": True})
    text = client.get("/metrics").text
    buckets = [line for line in text.splitlines() if line.startswith("essayscore_stage_seconds_bucket")]
    for stage in ("features", "tokenise", "encoder", "trees", "warnings", "explain", "total"):
        assert any(f'stage="{stage}"' in line for line in buckets), stage
    assert "essayscore_predicted_band_total{" in text


def test_python_client(bento) -> None:
    from essayscore.api_models import ScoreResponse
    from essayscore.client import EssayScoreClient, EssayScoreError

    essay = "Schools are important because they teach children how to live together and respect each other."
    with EssayScoreClient(bento.url) as c:
        assert c.ready() and c.alive()
        result = c.score(essay, prompt="Are schools important?", explain=True)
        assert isinstance(result, ScoreResponse) and result.explanation is not None
        assert {w.code for w in result.warnings} == {"too_short"}
        batch = c.score_batch([{"essay": essay}, {"essay": ""}])
        assert [r.ok for r in batch.results] == [True, False] and batch.results[1].error.code == "empty"
        assert c.metadata().model_version == bento.version
        with pytest.raises(EssayScoreError) as info:
            c.score("   ")
        assert info.value.status == 400 and info.value.code == "empty" and info.value.field == "essay"
