"""Text normalisation that is robust to how an essay was formatted.

Essays arrive from many sources: paragraphs separated by blank lines, single newlines or nothing; curly or
straight quotes; en/em dashes or hyphens; tabs, non-breaking spaces, stray spaces before punctuation. Every
downstream stage (features, encoder) sees the output of :func:`normalize`, so no feature can hinge on those
formatting artefacts.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TypeGuard

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
        "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": "", "\ufeff": "",
        "\t": " ", "\r": "\n", "\u2028": "\n", "\u2029": "\n",
    }
)
_SPACES = re.compile(r"[ \f\v]+")
_NEWLINES = re.compile(r"\s*\n\s*")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?])")
_WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")


def has_prompt(prompt: str | None) -> TypeGuard[str]:
    """The one rule for "this essay has a prompt": a prompt with something other than whitespace in it."""
    return prompt is not None and bool(prompt.strip())


def prompt_or_none(prompt: str | None) -> str | None:
    return prompt if has_prompt(prompt) else None


def normalize(text: str) -> str:
    """Canonical form: NFKC, ASCII quotes and dashes, single spaces, one newline between paragraphs."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _NEWLINES.sub("\n", text)
    return text.strip()


def flatten(text: str) -> str:
    """Normalised text on one line: what the encoder sees, so paragraph markup cannot move the embedding."""
    return normalize(text).replace("\n", " ")


def paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs of normalised text (any newline separates; an essay without newlines is one)."""
    return [p for p in normalize(text).split("\n") if p]


def words(text: str) -> list[str]:
    """Alphabetic word tokens (contractions and hyphenated compounds kept whole)."""
    return _WORD.findall(text)


# --- offset-preserving normalisation ----------------------------------------------------------------------------
# ``normalize_with_map`` replays :func:`normalize` step by step on a list of (char, index-in-original) pairs, so
# that a position found in the normalised text (a grammar match, a sentence) can be mapped back to the text the
# user sent.

_Pairs = list[tuple[str, int]]


def _nfkc_pairs(text: str) -> _Pairs:
    """NFKC per cluster (a starter plus the combining marks after it), each output char tagged with its source."""
    out: _Pairs = []
    start = 0
    n = len(text)
    for i in range(1, n + 1):
        # A cluster ends before a char that NFKC cannot merge with what precedes it.
        if i == n or (unicodedata.combining(text[i]) == 0 and not ("\u1160" <= text[i] <= "\u11ff")):
            for ch in unicodedata.normalize("NFKC", text[start:i]):
                out.append((ch, start))
            start = i
    if "".join(ch for ch, _ in out) == unicodedata.normalize("NFKC", text):
        return out
    # Rare compositions across clusters: align with difflib (slower, still exact in the output text).
    import difflib

    target = unicodedata.normalize("NFKC", text)
    sm = difflib.SequenceMatcher(None, text, target, autojunk=False)
    out = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        for k in range(j2 - j1):
            src = i1 + k if tag == "equal" else min(i1 + k, max(i1, i2 - 1))
            out.append((target[j1 + k], min(src, max(n - 1, 0))))
    return out


def _sub_pairs(pattern: re.Pattern[str], pairs: _Pairs, repl) -> _Pairs:
    """``pattern.sub`` on tagged chars; ``repl(match, pairs_slice)`` returns the replacement pairs."""
    s = "".join(ch for ch, _ in pairs)
    out: _Pairs = []
    last = 0
    for m in pattern.finditer(s):
        out.extend(pairs[last : m.start()])
        out.extend(repl(m, pairs[m.start() : m.end()]))
        last = m.end()
    out.extend(pairs[last:])
    return out


def normalize_with_map(text: str) -> tuple[str, list[int]]:
    """``normalize(text)`` plus a map: ``mapping[i]`` is the index in ``text`` of normalised char ``i``.

    The map has one extra sentinel entry, ``len(text)``, so ``mapping[j]`` is defined for an end offset ``j``.
    It is non-decreasing. Chars produced from one source char (``\u2026`` -> ``...``) share its index; a run of
    whitespace collapsed into one space or newline maps to the run's first char.
    """
    pairs = _nfkc_pairs(text)
    # translate + drop control chars (keeping newlines), as normalize does
    translated: _Pairs = []
    for ch, src in pairs:
        for t in ch.translate(_TRANSLATE):
            if t == "\n" or unicodedata.category(t)[0] != "C":
                translated.append((t, src))
    pairs = _sub_pairs(_SPACES, translated, lambda m, sl: [(" ", sl[0][1])])
    pairs = _sub_pairs(_SPACE_BEFORE_PUNCT, pairs, lambda m, sl: [sl[-1]])

    def _newline(m: re.Match[str], sl: _Pairs) -> _Pairs:
        first_nl = next(p for p in sl if p[0] == "\n")
        return [("\n", first_nl[1])]

    pairs = _sub_pairs(_NEWLINES, pairs, _newline)
    # strip()
    s = "".join(ch for ch, _ in pairs)
    lead = len(s) - len(s.lstrip())
    trail = len(s.rstrip())
    pairs = pairs[lead:trail]
    out = "".join(ch for ch, _ in pairs)
    mapping = [src for _, src in pairs]
    mapping.append(len(text))
    return out, mapping


def map_span(original: str, mapping: list[int], offset: int, length: int) -> tuple[int, int]:
    """Map a span (offset, length) of the normalised text back to (offset, length) in ``original``.

    The end is the end of the last normalised char's source, extended over combining marks that NFKC merged.
    """
    n = len(mapping) - 1
    offset = max(0, min(offset, n))
    end = max(offset, min(offset + length, n))
    start = mapping[offset]
    if end == offset:
        return start, 0
    stop = mapping[end - 1] + 1
    while stop < len(original) and unicodedata.combining(original[stop]):
        stop += 1
    return start, max(stop - start, 0)


def to_normalized_offset(mapping: list[int], original_offset: int) -> int:
    """Inverse of the map: index of the first normalised char whose source is at or after ``original_offset``."""
    import bisect

    return min(bisect.bisect_left(mapping, original_offset, 0, len(mapping) - 1), len(mapping) - 1)
