"""Grammar and spelling: error rates by category from the grammar checker (embedded harper-py + pyspellchecker
offline, or LanguageTool), normalised per 100 words so long and short essays compare."""

from __future__ import annotations

from essayscore.features.grammar import CATEGORIES

GROUP = "grammar_spelling"

_CATEGORY_TEXT = {
    "TYPOS": "Spelling mistakes",
    "GRAMMAR": "Grammar mistakes (agreement, articles, verb forms, word order)",
    "PUNCTUATION": "Punctuation and spacing problems",
    "CASING": "Capitalisation mistakes",
    "STYLE": "Style issues (wordiness, awkward phrasing)",
    "CONFUSED_WORDS": "Confused or misused words (e.g. 'their'/'there', 'affect'/'effect')",
    "REDUNDANCY": "Repeated or redundant words (e.g. 'the the')",
    "OTHER": "Other flagged language problems",
}

SPECS = tuple((f"{c.lower()}_per_100w", f"{_CATEGORY_TEXT[c]} per 100 words.") for c in CATEGORIES) + (
    ("error_rate_per_100w", "All language errors (everything but style) per 100 words."),
    ("misspelt_word_share", "Share of words that are misspelt."),
    ("distinct_error_types", "Number of different kinds of error made (distinct checker rules, style excluded)."),
    ("error_free_sentence_share", "Share of sentences with no language error flagged."),
)


def compute(a) -> dict[str, float]:
    n = a.n_words
    matches = a.matches
    out: dict[str, float] = {}
    for c in CATEGORIES:
        k = sum(1 for m in matches if m.category == c)
        out[f"{c.lower()}_per_100w"] = 100.0 * k / n if n else 0.0
    errors = [m for m in matches if m.category != "STYLE"]
    out["error_rate_per_100w"] = 100.0 * len(errors) / n if n else 0.0
    typos = sum(1 for m in matches if m.category == "TYPOS")
    out["misspelt_word_share"] = min(1.0, typos / n) if n else 0.0
    out["distinct_error_types"] = float(len({m.rule_id for m in errors}))
    sents = a.sents
    if sents:
        spans = [(s.start_char, s.end_char) for s in sents]
        bad = set()
        for m in errors:
            m_end = m.offset + max(m.length, 1)
            for i, (s, e) in enumerate(spans):
                if m.offset < e and s < m_end:
                    bad.add(i)
                    break
        out["error_free_sentence_share"] = 1.0 - len(bad) / len(sents)
    else:
        out["error_free_sentence_share"] = 0.0
    return out
