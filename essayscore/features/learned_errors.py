"""Learned error density: what the token-level error detector (trained on the W&I gold corrections and shipped
in the artifact, :mod:`essayscore.error_detector`) finds, per 100 words and by type. NaN when no detector is
loaded (a model trained without one)."""

from __future__ import annotations

GROUP = "learned_errors"

SPECS = (
    ("detected_errors_per_100w", "Words the learned error detector expects a teacher to correct, per 100 words."),
    ("detected_spelling_per_100w", "Spelling corrections the learned detector expects, per 100 words."),
    ("detected_grammar_per_100w",
     "Word-form and word-choice corrections (agreement, tense, articles, wrong word) expected, per 100 words."),
    ("detected_missing_word_per_100w",
     "Places where a word is missing, as the learned detector expects, per 100 words."),
    ("detected_unnecessary_word_per_100w",
     "Words a teacher would delete, as the learned detector expects, per 100 words."),
    ("detected_punctuation_per_100w", "Punctuation corrections the learned detector expects, per 100 words."),
    ("detected_clean_sentence_share", "Share of sentences in which the learned detector expects no correction."),
)
NAMES = tuple(name for name, _ in SPECS)


def compute(a) -> dict[str, float]:
    detector = a.extras.get("error_detector")
    if detector is None:
        return {name: float("nan") for name in NAMES}
    return dict(zip(NAMES, detector.density_features(a.flat)))
