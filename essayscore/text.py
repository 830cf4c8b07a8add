"""Text normalisation that is robust to how an essay was formatted.

Essays arrive from many sources: paragraphs separated by blank lines, single newlines or nothing; curly or
straight quotes; en/em dashes or hyphens; tabs, non-breaking spaces, stray spaces before punctuation. Every
downstream stage (features, encoder) sees the output of :func:`normalize`, so no feature can hinge on those
formatting artefacts.
"""

from __future__ import annotations

import re
import unicodedata

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
