"""Prompt alignment: does the essay address the task? Keyword overlap between the prompt's content lemmas
(instruction words such as 'agree' or 'discuss' removed) and the essay's, copying of the prompt, and the
encoder-based ``prompt_essay_cosine`` filled in later by :func:`add_embedding_features`.

All are NaN when no prompt is given.
"""

from __future__ import annotations

from essayscore.features.cohesion import _cos, _vec

GROUP = "prompt_alignment"

SPECS = (
    ("prompt_keyword_coverage", "Share of the prompt's key words that the essay uses (on-topic coverage)."),
    ("essay_prompt_keyword_share", "Share of the essay's content words that are key words of the prompt."),
    ("prompt_lexical_similarity", "Similarity of the essay's and prompt's vocabulary (cosine of content lemmas)."),
    ("intro_prompt_coverage", "Share of the prompt's key words that appear in the essay's first three sentences."),
    ("prompt_copy_share", "Share of the essay's three-word sequences copied verbatim from the prompt."),
    ("prompt_essay_cosine", "Meaning similarity of essay and prompt from the neural text encoder.", True),
)

NAN = float("nan")


def compute(a) -> dict[str, float]:
    info = a.prompt
    if info is None:
        return {entry[0]: NAN for entry in SPECS}
    keys = info.keywords
    lemmas = a.content_lemmas
    essay_set = set(lemmas)
    intro = {x for s in a.sent_content_lemmas[:3] for x in s}
    low = a.lower_words
    trigrams = list(zip(low, low[1:], low[2:]))
    prompt_vec = _vec([k for k, c in info.lemma_counts.items() for _ in range(c)])
    return {
        "prompt_keyword_coverage": len(keys & essay_set) / len(keys) if keys else 0.0,
        "essay_prompt_keyword_share": sum(1 for x in lemmas if x in keys) / len(lemmas) if lemmas else 0.0,
        "prompt_lexical_similarity": _cos(_vec(lemmas), prompt_vec),
        "intro_prompt_coverage": len(keys & intro) / len(keys) if keys else 0.0,
        "prompt_copy_share": (
            sum(1 for t in trigrams if t in info.trigrams) / len(trigrams) if trigrams else 0.0
        ),
        "prompt_essay_cosine": NAN,  # needs the encoder: add_embedding_features
    }


