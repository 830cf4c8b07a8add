"""A learned token-level error detector: which words a teacher would correct, and how.

Trained on the W&I gold corrections (:mod:`training.error_detector`), shipped in the artifact
(``error_detector.npz``) and run here with numpy alone: a linear one-vs-rest model over hashed context features
(the word, its neighbours, bigrams, shape, suffix and everyday frequency), so it runs offline on one CPU core in
a few milliseconds per essay. Its per-type error densities are the ``learned_errors`` feature group.

Token classes (what the gold edit touching a token does):

=============  ==========================================================================================
correct        no edit touches the token
spelling       one word replaced by a similar one, where the original is not an English word
grammar        any other replacement (word form, agreement, tense, article, word choice)
missing        a word must be inserted before this token
unnecessary    the token is deleted
punctuation    the edit adds, removes or changes punctuation only
=============  ==========================================================================================
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CLASSES = ("correct", "spelling", "grammar", "missing", "unnecessary", "punctuation")
ERROR_CLASSES = CLASSES[1:]
HASH_BITS = 20

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*|[^\sA-Za-z0-9]")
_SENTENCE_END = frozenset(".!?")


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int

    @property
    def is_word(self) -> bool:
        return self.text[0].isalnum()


def tokenize(text: str) -> list[Token]:
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _shape(word: str) -> str:
    if word.isdigit():
        return "d"
    if not word[0].isalnum():
        return "p"
    if word.isupper() and len(word) > 1:
        return "X"
    return "Xx" if word[0].isupper() else "x"


def _zipf_bucket(word: str) -> int:
    from essayscore.features.nlp import zipf

    return int(round(zipf(word)))


@lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    """pyspellchecker's English word list (wordfreq alone knows common misspellings such as 'recieved')."""
    from spellchecker import SpellChecker

    return frozenset(SpellChecker(language="en", distance=1).word_frequency.dictionary)


def _known(word: str) -> int:
    return int(not word.isalpha() or word in _dictionary())


def token_feature_indices(tokens: list[Token], bits: int = HASH_BITS) -> list[np.ndarray]:
    """Hashed feature indices of every token (crc32: stable across processes and platforms)."""
    mask = (1 << bits) - 1
    low = ["<s>", "<s>"] + [t.text.lower().replace("’", "'") for t in tokens] + ["</s>", "</s>"]
    out = []
    for i, tok in enumerate(tokens):
        j = i + 2
        w = low[j]
        zb = _zipf_bucket(w) if tok.is_word else -1
        known = _known(w) if tok.is_word else 1
        feats = (
            "b", f"w={w}", f"p={low[j - 1]}", f"n={low[j + 1]}", f"pp={low[j - 2]}", f"nn={low[j + 2]}",
            f"pw={low[j - 1]}|{w}", f"wn={w}|{low[j + 1]}", f"pwn={low[j - 1]}|{w}|{low[j + 1]}",
            f"ppw={low[j - 2]}|{low[j - 1]}|{w}", f"s={_shape(tok.text)}", f"suf={w[-3:]}", f"z={zb}",
            f"zs={zb}|{_shape(tok.text)}", f"zp={zb}|{low[j - 1]}", f"len={min(len(w), 12)}|{zb}",
            f"k={known}", f"kz={known}|{zb}", f"ks={known}|{w[-2:]}", f"kx={known}|{_shape(tok.text)}",
        )
        out.append(np.fromiter((zlib.crc32(f.encode()) & mask for f in feats), dtype=np.int64, count=len(feats)))
    return out


class ErrorDetector:
    """Linear one-vs-rest scores over hashed features; ``weights`` is (2**bits, len(CLASSES))."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, bits: int = HASH_BITS, metrics: dict | None = None):
        # stored as float16 in the artifact: round here too, so training features equal what serving computes
        self.weights = np.asarray(weights, dtype=np.float16).astype(np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.bits = bits
        self.metrics = metrics or {}
        if self.weights.shape != (1 << bits, len(CLASSES)):
            raise ValueError(f"detector weights {self.weights.shape} do not match {1 << bits} x {len(CLASSES)}")

    # -- inference -------------------------------------------------------------------------------------------
    def probabilities_for(self, indices: list[np.ndarray]) -> np.ndarray:
        """(n_tokens, len(CLASSES)) class probabilities (one-vs-rest sigmoids, normalised to sum to 1)."""
        if not indices:
            return np.zeros((0, len(CLASSES)), dtype=np.float64)
        scores = np.stack([self.weights[idx].sum(axis=0) for idx in indices]).astype(np.float64) + self.bias
        p = 1.0 / (1.0 + np.exp(-np.clip(scores, -30, 30)))
        return p / p.sum(axis=1, keepdims=True)

    def tag(self, text: str) -> tuple[list[Token], np.ndarray]:
        tokens = tokenize(text)
        return tokens, self.probabilities_for(token_feature_indices(tokens, self.bits))

    def density_features(self, text: str) -> list[float]:
        """The ``learned_errors`` features, in :data:`essayscore.features.learned_errors.NAMES` order."""
        tokens, p = self.tag(text)
        return density_from_probabilities(tokens, p)

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        np.savez_compressed(path, weights=self.weights.astype(np.float16), bias=self.bias,
                            bits=np.array(self.bits), classes=np.array(CLASSES))

    @classmethod
    def load(cls, path: Path) -> ErrorDetector:
        data = np.load(path, allow_pickle=False)
        if tuple(str(c) for c in data["classes"]) != CLASSES:
            raise ValueError(f"{path}: detector classes {list(data['classes'])} differ from {list(CLASSES)}")
        return cls(data["weights"].astype(np.float32), data["bias"], int(data["bits"]))


def density_from_probabilities(tokens: list[Token], p: np.ndarray) -> list[float]:
    n_words = sum(1 for t in tokens if t.is_word)
    if n_words == 0:
        return [0.0] * 6 + [1.0]
    per100 = 100.0 / n_words
    by_class = p.sum(axis=0)
    error = 1.0 - p[:, 0]
    sentences, flagged, current = 0, 0, 0.0
    for tok, e in zip(tokens, error):
        current = max(current, e)
        if tok.text in _SENTENCE_END:
            sentences += 1
            flagged += current >= 0.5
            current = 0.0
    if current > 0 or sentences == 0:  # an unterminated last sentence
        sentences += 1
        flagged += current >= 0.5
    return [float(error.sum() * per100), *(float(by_class[CLASSES.index(c)] * per100) for c in ERROR_CLASSES),
            1.0 - flagged / sentences]
