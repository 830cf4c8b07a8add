"""Soft warnings on a scored essay: the essay is scored anyway, but the band may not mean much.

Three checks, each a pure function of the essay text and the handcrafted feature values (the ones the runtime
already computed, in ``FEATURES`` order), so the embedded and Triton runtimes give the same warnings:

``too_short``
    Fewer than ``settings.min_words_warning`` words (``essayscore.text.words``, the same count as the
    ``word_count`` feature).

``off_topic`` (only with a prompt)
    ``prompt_essay_cosine < 0.40`` AND ``prompt_keyword_coverage < 0.25``. Chosen from the shared data
    (``/work/shared/data/ielts-task2/essays.csv``): 300 random essays (seed 0) scored against their own prompt and
    against a random *different* prompt (MiniLM w256/s192 embeddings from the project's embedding cache, keyword
    coverage as in ``features/prompt.py``). Own prompt: cosine p5 0.54 / median 0.70, coverage p5 0.33 / median
    0.72. Other prompt: cosine median 0.19 / p90 0.37, coverage median 0.11 / p90 0.33. The AND rule flags 2.0 %
    of essays against their own prompt (they are genuinely loosely related) and 79 % of essays against a wrong
    prompt; requiring both signals keeps false alarms low when the essay paraphrases the prompt.

``not_english``
    Share of word tokens (unicode letters) whose English Zipf frequency in ``wordfreq`` is >= 3.0 below 0.70.
    Measured: the lowest share among 400 shared essays is 0.85 (p1 0.95); planted French / German / Spanish
    paragraphs score 0.41 / 0.26 / 0.45, keyboard gibberish 0.0. Texts with fewer than 5 words are not judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

OFF_TOPIC_MAX_COSINE = 0.40
OFF_TOPIC_MAX_COVERAGE = 0.25
ENGLISH_MIN_ZIPF = 3.0
ENGLISH_MIN_KNOWN_SHARE = 0.70
ENGLISH_MIN_WORDS = 5

_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


@dataclass(frozen=True)
class EssayWarning:
    code: str
    message: str

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


@lru_cache(maxsize=200_000)
def _known(word: str) -> bool:
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en") >= ENGLISH_MIN_ZIPF


def english_share(text: str) -> tuple[float, int]:
    """(share of word tokens that are common English words, number of tokens)."""
    tokens = [t.lower().replace("’", "'") for t in _TOKEN.findall(text)]
    if not tokens:
        return 0.0, 0
    return sum(_known(t) for t in tokens) / len(tokens), len(tokens)


def _feature(handcrafted: np.ndarray | None, name: str) -> float:
    if handcrafted is None:
        return float("nan")
    from essayscore.features.registry import FEATURE_INDEX

    value = float(np.asarray(handcrafted, dtype=np.float64).reshape(-1)[FEATURE_INDEX[name]])
    return value


def check(essay: str, prompt: str | None = None, handcrafted: np.ndarray | None = None,
          min_words: int | None = None) -> list[EssayWarning]:
    from essayscore.text import words

    if min_words is None:
        from essayscore.settings import get_settings

        min_words = get_settings().min_words_warning
    out: list[EssayWarning] = []
    n_words = len(words(essay))
    if n_words < min_words:
        out.append(EssayWarning("too_short", f"the essay has {n_words} words; below {min_words} words the band is "
                                        "unreliable (IELTS Task 2 asks for at least 250)"))
    share, n_tokens = english_share(essay)
    if n_tokens >= ENGLISH_MIN_WORDS and share < ENGLISH_MIN_KNOWN_SHARE:
        out.append(EssayWarning("not_english", f"only {share:.0%} of the words are common English words; the essay may "
                                          "not be written in English, and the band is not meaningful"))
    if prompt:
        cosine = _feature(handcrafted, "prompt_essay_cosine")
        coverage = _feature(handcrafted, "prompt_keyword_coverage")
        if np.isfinite(cosine) and np.isfinite(coverage) and cosine < OFF_TOPIC_MAX_COSINE \
                and coverage < OFF_TOPIC_MAX_COVERAGE:
            out.append(EssayWarning("off_topic", f"the essay does not seem to address the prompt (meaning similarity "
                                            f"{cosine:.2f}, {coverage:.0%} of the prompt's key words used)"))
    return out
