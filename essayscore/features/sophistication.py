"""Lexical sophistication: word length, how rare the words are (wordfreq Zipf frequencies), academic vocabulary
(Coxhead's Academic Word List), lexical density and nominalisation."""

from __future__ import annotations

import re

from essayscore.features.nlp import awl_words, zipf

GROUP = "lexical_sophistication"

SPECS = (
    ("mean_word_length", "Average word length in letters."),
    ("long_word_share", "Share of words with 8 or more letters."),
    ("mean_content_zipf",
     "Average everyday frequency of the content words (Zipf scale; lower = rarer, more advanced words)."),
    ("rare_word_share", "Share of content words that are real but uncommon (Zipf frequency below 4)."),
    ("awl_word_share", "Share of words from the Academic Word List (e.g. 'significant', 'approach', 'impact')."),
    ("awl_family_count", "Number of different Academic Word List word families used."),
    ("lexical_density", "Share of words that carry meaning (nouns, verbs, adjectives, adverbs) rather than grammar."),
    ("nominalisation_rate", "Abstract nouns such as '-tion', '-ment', '-ness', '-ity' words per 100 words."),
)

RARE_ZIPF = 4.0
_NOMINAL = re.compile(r"(?:tion|sion|ment|ness|ity|ance|ence|ism|ship|hood)s?$")


def compute(a) -> dict[str, float]:
    toks = a.lower_words
    n = len(toks)
    content = [t.lower_ for t in a.content_tokens]
    zipfs = [zipf(w) for w in content]
    known = [z for z in zipfs if z > 0]  # unseen forms are mostly misspellings: the spelling group counts those
    awl = awl_words()
    awl_hits = [awl[w] for w in toks if w in awl]
    meaning = sum(1 for t in a.tokens if t.pos_ in ("NOUN", "VERB", "ADJ", "ADV", "PROPN"))
    nominal = sum(1 for t in a.doc if t.pos_ == "NOUN" and len(t.text) > 5 and _NOMINAL.search(t.lower_))
    return {
        "mean_word_length": sum(len(w) for w in toks) / n if n else 0.0,
        "long_word_share": sum(1 for w in toks if len(w) >= 8) / n if n else 0.0,
        "mean_content_zipf": sum(known) / len(known) if known else 0.0,
        "rare_word_share": sum(1 for z in known if z < RARE_ZIPF) / len(known) if known else 0.0,
        "awl_word_share": len(awl_hits) / n if n else 0.0,
        "awl_family_count": float(len(set(awl_hits))),
        "lexical_density": meaning / len(a.tokens) if a.tokens else 0.0,
        "nominalisation_rate": 100.0 * nominal / n if n else 0.0,
    }
