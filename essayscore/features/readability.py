"""Readability formulas from textstat. Syllables come from the CMU dictionary: the compact table of
:func:`essayscore.resources.use_compact_cmudict`, else NLTK's corpus prepared offline by
:func:`essayscore.resources.ensure_cmudict`. For essays they act as a proxy for word and sentence complexity."""

from __future__ import annotations

import math

GROUP = "readability"

SPECS = (
    ("flesch_reading_ease", "Flesch reading ease (higher = easier to read; mature writing scores lower)."),
    ("flesch_kincaid_grade", "Flesch-Kincaid grade level (US school grade needed to read the text)."),
    ("gunning_fog", "Gunning fog index (years of schooling needed; rises with long sentences and long words)."),
    ("smog_index", "SMOG grade, from the number of words with three or more syllables."),
    ("coleman_liau_index", "Coleman-Liau grade level, from letters per word and sentences per word."),
    ("dale_chall_score",
     "Dale-Chall score: share of words outside a list of 3,000 familiar words, and sentence length."),
    ("automated_readability_index", "Automated readability index (grade level from characters and words)."),
    ("syllables_per_word", "Average syllables per word."),
    ("polysyllable_share", "Share of words with three or more syllables."),
    ("difficult_word_share", "Share of words not on the Dale-Chall list of familiar words."),
)

_TS = None


def _textstat():
    global _TS
    if _TS is None:
        from essayscore import resources

        # before textstat is imported: its syllable counts then come from the compact table, and NLTK (which
        # textstat imports only to read cmudict) stays out of the process: about 200 MB less in every worker
        compact = resources.use_compact_cmudict()
        import textstat

        if not compact:
            resources.ensure_cmudict()  # before textstat first asks NLTK for cmudict (it would try to download it)
        _TS = textstat
    return _TS


def _safe(fn, text: str) -> float:
    try:
        value = float(fn(text))
    except (ZeroDivisionError, ValueError, TypeError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def compute(a) -> dict[str, float]:
    ts = _textstat()
    text = a.flat
    n = a.n_words
    if not n:
        return {name: 0.0 for name, _ in SPECS}
    lex = _safe(ts.lexicon_count, text) or float(n)
    return {
        "flesch_reading_ease": _safe(ts.flesch_reading_ease, text),
        "flesch_kincaid_grade": _safe(ts.flesch_kincaid_grade, text),
        "gunning_fog": _safe(ts.gunning_fog, text),
        "smog_index": _safe(ts.smog_index, text),
        "coleman_liau_index": _safe(ts.coleman_liau_index, text),
        "dale_chall_score": _safe(ts.dale_chall_readability_score, text),
        "automated_readability_index": _safe(ts.automated_readability_index, text),
        "syllables_per_word": _safe(ts.syllable_count, text) / lex,
        "polysyllable_share": _safe(ts.polysyllabcount, text) / lex,
        "difficult_word_share": _safe(ts.difficult_words, text) / lex,
    }
