"""Text normalisation, and the offset map that lets matches on normalised text point into the original."""

from __future__ import annotations

import random
import unicodedata

import pytest

from essayscore.text import (
    flatten,
    map_span,
    normalize,
    normalize_with_map,
    paragraphs,
    to_normalized_offset,
    words,
)

ODD = (
    "  \ufeffIn my opinion,\u00a0 the \u201cgovernment\u201d  should\tinvest \u2014 heavily \u2026 "
    "in  schools .\r\n\r\n"
    "\u2003Secondly , e\u0301ducation\u200b matters ; we can\u2019t ignore it !\n\n\n   \ufb01nally: \uff21\uff22 ok.  "
)


def test_normalize_canonical_form():
    assert normalize(ODD) == (
        "In my opinion, the \"government\" should invest - heavily... in schools.\n"
        "Secondly, \u00e9ducation matters; we can't ignore it!\n"
        "finally: AB ok."
    )
    assert paragraphs("a\n\n\nb\r\n c") == ["a", "b", "c"]
    assert flatten("a\n\nb") == "a b"
    assert words("Well-known can't x2 e-mail's") == ["Well-known", "can't", "x", "e-mail's"]


@pytest.mark.parametrize("text", ["", "   ", "a", "\n\n", ODD, "x\n\n\n y", "\u00e9 e\u0301 \u1100\u1161\u11a8 \ufb01"])
def test_normalize_with_map_gives_exactly_normalize(text):
    norm, mapping = normalize_with_map(text)
    assert norm == normalize(text)
    assert len(mapping) == len(norm) + 1
    assert mapping[-1] == len(text)
    assert all(a <= b for a, b in zip(mapping, mapping[1:])), "map must be non-decreasing"


def test_normalize_with_map_random_property():
    """Fuzz with the characters normalisation touches; unchanged chars map to themselves in the original."""
    alphabet = list("ab ,.;:!?\n\t\r-'\"") + [
        "\u00a0", "\u2019", "\u201c", "\u2026", "\u200b", "\u0301", "\u00e9", "\ufb01", "\uff26", "\x07", "\u2014",
        "\u1100", "\u1161", "\U0001f600",
    ]
    rng = random.Random(1234)
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        norm, mapping = normalize_with_map(text)
        assert norm == normalize(text), repr(text)
        assert len(mapping) == len(norm) + 1
        for i, ch in enumerate(norm):
            src = text[mapping[i]]
            if ch.isalpha() and ch.isascii():
                # an unchanged letter maps to itself; a letter produced by NFKC comes from a char that yields it
                assert src == ch or ch in unicodedata.normalize("NFKC", src), (repr(text), i)


def test_unchanged_characters_map_to_themselves():
    norm, mapping = normalize_with_map(ODD)
    for i, ch in enumerate(norm):
        if ch.isascii() and ch.isalnum():
            assert ODD[mapping[i]] == ch or ch in unicodedata.normalize("NFKC", ODD[mapping[i]])


def test_planted_typo_offset_points_into_original():
    original = "\u201cSchools\u201d   must\u00a0\u00a0recieve\t more  money ,\r\n\r\n  and teachers \u2019too\u2019."
    norm, mapping = normalize_with_map(original)
    i = norm.index("recieve")
    off, length = map_span(original, mapping, i, len("recieve"))
    assert original[off : off + length] == "recieve"
    j = norm.index("money")
    off, length = map_span(original, mapping, j, len("money"))
    assert original[off : off + length] == "money"
    # a span covering a collapsed run of whitespace keeps both ends on real characters
    k = norm.index("must recieve")
    off, length = map_span(original, mapping, k, len("must recieve"))
    assert original[off : off + length] == "must\u00a0\u00a0recieve"
    # inverse map
    assert to_normalized_offset(mapping, original.index("recieve")) == i


def test_map_span_covers_combining_marks_and_expansions():
    original = "Cafe\u0301 \u2026 end"
    norm, mapping = normalize_with_map(original)
    assert norm == "Caf\u00e9... end"
    off, length = map_span(original, mapping, 0, 4)
    assert original[off : off + length] == "Cafe\u0301"
    off, length = map_span(original, mapping, norm.index("..."), 3)
    assert original[off : off + length] == "\u2026"
    assert map_span(original, mapping, len(norm), 0) == (len(original), 0)
