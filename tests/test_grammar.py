"""Grammar checkers: the embedded offline checker (real harper-py + pyspellchecker) and the LanguageTool HTTP
client against a real HTTP server on 127.0.0.1 that answers in LanguageTool's format."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from essayscore.features.grammar import (
    CATEGORIES,
    EmbeddedChecker,
    GrammarMatch,
    LanguageToolChecker,
    LanguageToolError,
    get_checker,
)
from essayscore.settings import Settings


@pytest.fixture(scope="module")
def checker() -> EmbeddedChecker:
    return get_checker(Settings(languagetool_url=None))  # the shared embedded checker


def _spans(text: str, matches: list[GrammarMatch]) -> dict[str, GrammarMatch]:
    return {text[m.offset : m.offset + m.length]: m for m in matches}


# --- embedded ---------------------------------------------------------------------------------------------------


def test_get_checker_picks_by_settings(checker):
    assert isinstance(checker, EmbeddedChecker)
    assert get_checker(Settings(languagetool_url=None)) is checker  # built once per process
    lt = get_checker(Settings(languagetool_url="http://127.0.0.1:9/", languagetool_timeout_s=2.5))
    assert isinstance(lt, LanguageToolChecker) and lt.timeout_s == 2.5 and lt.url == "http://127.0.0.1:9"


def test_embedded_finds_typos_grammar_and_repetition(checker):
    text = (
        "Their are many reasons why this is a important issue. The the goverment should recieve more "
        "informations about it."
    )
    found = _spans(text, checker.check(text))
    assert found["goverment"].category == "TYPOS"
    assert "government" in found["goverment"].suggestions
    assert found["recieve"].category == "TYPOS"
    assert found["a"].category == "GRAMMAR" and found["a"].suggestions == ("an",)
    assert found["The the"].category == "REDUNDANCY"
    assert "Their" in found
    for m in found.values():
        assert m.category in CATEGORIES
        assert len(m.suggestions) <= 5
        assert set(m.to_dict()) == {"offset", "length", "category", "rule_id", "message", "suggestions"}


def test_embedded_accepts_british_and_american_spelling(checker):
    text = "The colour and color of the centre and center; we organise and organize, analyse and analyze."
    typos = [m for m in checker.check(text) if m.category == "TYPOS"]
    assert typos == []


def test_embedded_offsets_point_into_original_text(checker):
    original = (
        "\u201cSchools\u201d   must\u00a0\u00a0recieve\t more  money ,\r\n\r\n   and the goverment\u2019s "
        "plans \u2026 are   unclear ."
    )
    found = _spans(original, checker.check(original))
    assert "recieve" in found and found["recieve"].category == "TYPOS"
    assert any(k.startswith("goverment") for k in found)


def test_spelling_from_pyspellchecker_is_not_duplicated(checker):
    text = "Many peple think that educaton is importnt for society and for the economy."
    matches = checker.check(text)
    spans = [(m.offset, m.offset + m.length) for m in matches]
    for i, (s1, e1) in enumerate(spans):
        for s2, e2 in spans[i + 1 :]:
            assert not (s1 < e2 and s2 < e1), "overlapping matches"
    assert {"peple", "educaton", "importnt"} <= set(_spans(text, matches))


@pytest.mark.parametrize("text", ["", "   \n\n ", "a", "!!!", "ALL CAPS WITHOUT PUNCTUATION", "\U0001f600 ok"])
def test_embedded_weird_inputs(checker, text):
    for m in checker.check(text):
        assert 0 <= m.offset <= m.offset + m.length <= len(text)


# --- LanguageTool over real HTTP --------------------------------------------------------------------------------


class _LTHandler(BaseHTTPRequestHandler):
    """A tiny LanguageTool stand-in: flags 'recieve' (TYPOS) and ' ,' style spacing, in LT's JSON format.

    Offsets are computed from the text it receives, in UTF-16 code units as the real (Java) server does.
    """

    requests: list[dict] = []
    status = 200

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8"))
        type(self).requests.append({"path": self.path, "form": form, "ctype": self.headers.get("Content-Type")})
        if type(self).status != 200:
            self.send_response(type(self).status)
            self.end_headers()
            self.wfile.write(b"server exploded")
            return
        text = form["text"][0]

        def u16(i: int) -> int:
            return len(text[:i].encode("utf-16-le")) // 2

        matches = []
        i = text.find("recieve")
        if i >= 0:
            matches.append(
                {
                    "message": "Possible spelling mistake found.",
                    "shortMessage": "Spelling mistake",
                    "replacements": [
                        {"value": v} for v in ["receive", "relieve", "reprieve", "recipe", "revive", "rive"]
                    ],
                    "offset": u16(i),
                    "length": 7,
                    "context": {"text": text, "offset": u16(i), "length": 7},
                    "sentence": text,
                    "type": {"typeName": "UnknownWord"},
                    "rule": {
                        "id": "MORFOLOGIK_RULE_EN_US",
                        "description": "Possible spelling mistake",
                        "issueType": "misspelling",
                        "category": {"id": "TYPOS", "name": "Possible Typo"},
                    },
                    "ignoreForIncompleteSentence": False,
                    "contextForSureMatch": 0,
                }
            )
        j = text.find("an book")
        if j >= 0:
            matches.append(
                {
                    "message": "Use 'a' instead of 'an'.",
                    "replacements": [{"value": "a book"}],
                    "offset": u16(j),
                    "length": 7,
                    "rule": {"id": "EN_A_VS_AN", "category": {"id": "MISC", "name": "Miscellaneous"}},
                }
            )
        k = text.find("  ")
        if k >= 0:
            matches.append(
                {
                    "message": "Whitespace repetition.",
                    "replacements": [{"value": " "}],
                    "offset": u16(k),
                    "length": 2,
                    "rule": {"id": "WHITESPACE_RULE", "category": {"id": "TYPOGRAPHY", "name": "Typography"}},
                }
            )
        body = json.dumps(
            {"software": {"name": "LanguageTool", "version": "6.4"}, "language": {"code": "en-US"}, "matches": matches}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def lt_server():
    _LTHandler.requests = []
    _LTHandler.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LTHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_languagetool_client_posts_form_and_maps_matches(lt_server):
    original = "\U0001f600 \u201cStudents\u201d  must\u00a0recieve   help ,\r\n\r\nand an book."
    checker = LanguageToolChecker(lt_server + "/", timeout_s=5)
    matches = checker.check(original)

    (req,) = _LTHandler.requests
    assert req["path"] == "/v2/check"
    assert req["ctype"].startswith("application/x-www-form-urlencoded")
    assert req["form"]["language"] == ["en-US"]
    sent = req["form"]["text"][0]
    assert sent == "\U0001f600 \"Students\" must recieve help, and an book."  # normalised, one line

    found = _spans(original, matches)
    typo = found["recieve"]  # UTF-16 offsets after the emoji were converted, then mapped into the original
    assert typo.category == "TYPOS" and typo.rule_id == "MORFOLOGIK_RULE_EN_US"
    assert typo.message == "Possible spelling mistake found."
    assert typo.suggestions == ("receive", "relieve", "reprieve", "recipe", "revive")  # capped at 5
    a_an = found["an book"]
    assert a_an.category == "OTHER" and a_an.suggestions == ("a book",)
    assert [m.offset for m in matches] == sorted(m.offset for m in matches)


def test_languagetool_category_aliases(lt_server):
    checker = LanguageToolChecker(lt_server)
    # normalisation removes double spaces, so send text whose *normalised* form still has none: no match
    assert checker.check("Fine text.") == []
    assert checker.check_normalized("Two  spaces.")[0].category == "PUNCTUATION"  # TYPOGRAPHY -> PUNCTUATION


def test_languagetool_http_error_raises_clearly(lt_server):
    _LTHandler.status = 500
    with pytest.raises(LanguageToolError, match="HTTP 500"):
        LanguageToolChecker(lt_server).check("Some text.")


def test_languagetool_unreachable_raises_clearly():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LanguageToolError, match="failed"):
        LanguageToolChecker(f"http://127.0.0.1:{port}", timeout_s=2).check("Some text.")


def test_languagetool_empty_text_makes_no_request(lt_server):
    assert LanguageToolChecker(lt_server).check("  \n ") == []
    assert _LTHandler.requests == []


def test_essay_rule_set_names_exist_in_harper():
    import harper

    from essayscore.features.grammar import (
        HARPER_DISABLED_RULES,
        HARPER_ESSAY_RULES_FIRED,
        HARPER_ESSAY_RULES_GENERAL,
    )

    known = set(harper.Linter(harper.Dialect.BRITISH).get_default_lint_config())
    assert set(HARPER_ESSAY_RULES_FIRED) | set(HARPER_ESSAY_RULES_GENERAL) <= known
    assert set(HARPER_DISABLED_RULES) <= known
    with pytest.raises(ValueError):
        EmbeddedChecker(rules="some")
