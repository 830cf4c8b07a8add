"""Length and structure, in formatting-robust forms only.

Paragraph counts are deliberately not features: essays from other sources separate paragraphs by blank lines,
single newlines or nothing, so a model could learn the formatting instead of the writing. Structure is read from
what the words say instead (an introduction stating a position, a conclusion marked as such).
"""

from __future__ import annotations

import re

import numpy as np

GROUP = "length_structure"

IELTS_MIN_WORDS = 250

SPECS = (
    ("word_count", "Number of words in the essay."),
    ("below_min_length",
     "How far the essay falls short of the 250 words IELTS Task 2 asks for (0 = long enough, 1 = empty)."),
    ("sentence_count", "Number of sentences."),
    ("mean_sentence_length", "Average sentence length in words."),
    ("sd_sentence_length", "How much sentence length varies (standard deviation, in words)."),
    ("long_sentence_share", "Share of sentences longer than 35 words (often run-on sentences)."),
    ("short_sentence_share", "Share of sentences shorter than 8 words."),
    ("question_exclamation_share", "Share of sentences ending in a question or exclamation mark."),
    ("intro_position_marker",
     "The opening sentences state a position or introduce the discussion "
     "(e.g. 'I strongly believe', 'This essay will')."),
    ("conclusion_marker", "The closing sentences are marked as a conclusion (e.g. 'In conclusion', 'To sum up')."),
)

_INTRO = re.compile(
    r"\b(?:this essay|in this essay|this (?:paper|piece)|i will (?:discuss|argue|explain|examine|outline|analy[sz]e)"
    r"|will be (?:discussed|examined|explained|analy[sz]ed)"
    r"|i (?:strongly |firmly |completely |totally |partly |partially |fully |largely |wholeheartedly |personally )?"
    r"(?:agree|disagree|believe|think|feel|contend|maintain|would argue)|in my (?:opinion|view|perspective)"
    r"|my (?:opinion|view|position) is|from my (?:perspective|point of view)|personally|to my mind"
    r"|(?:advantages|benefits) (?:outweigh|overweigh)|(?:disadvantages|drawbacks) (?:outweigh|overweigh)"
    r"|both (?:sides|views|viewpoints)|this (?:issue|topic|question)|it is (?:often |commonly |widely |generally )?"
    r"(?:argued|believed|said|thought|claimed))\b",
    re.IGNORECASE,
)
_CONCLUSION = re.compile(
    r"\b(?:in conclusion|to conclude|concluding|to sum up|to summari[sz]e|in summary|summing up|all in all"
    r"|overall|on the whole|in short|in brief|in a nutshell|taking everything into account|all things considered"
    r"|to put it (?:briefly|simply)|in the final analysis|in the end|to wrap up|finally)\b",
    re.IGNORECASE,
)


def compute(a) -> dict[str, float]:
    n = a.n_words
    counts = np.asarray(a.sent_word_counts, dtype=np.float64)
    n_sent = len(counts)
    sents = [s.text for s in a.sents]
    head = " ".join(sents[:3])
    tail = " ".join(sents[-3:]) if n_sent > 3 else (sents[-1] if sents else "")
    return {
        "word_count": float(n),
        "below_min_length": max(0.0, IELTS_MIN_WORDS - n) / IELTS_MIN_WORDS,
        "sentence_count": float(n_sent),
        "mean_sentence_length": float(counts.mean()) if n_sent else 0.0,
        "sd_sentence_length": float(counts.std()) if n_sent else 0.0,
        "long_sentence_share": float((counts > 35).mean()) if n_sent else 0.0,
        "short_sentence_share": float((counts < 8).mean()) if n_sent else 0.0,
        "question_exclamation_share": (
            sum(1 for s in sents if s.rstrip(" \"')").endswith(("?", "!"))) / n_sent if n_sent else 0.0
        ),
        "intro_position_marker": 1.0 if _INTRO.search(head) else 0.0,
        "conclusion_marker": 1.0 if n_sent > 1 and _CONCLUSION.search(tail) else 0.0,
    }
