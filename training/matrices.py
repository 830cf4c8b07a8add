"""What the model sees for a set of essays (:class:`Matrices`): features and embeddings, cached on disk so that
retraining neither re-extracts nor re-embeds. The feature cache is keyed by the essays, the grammar checker and
a fingerprint of the feature code and the libraries it calls (``feature_code_fingerprint``): editing how a
feature is computed, or upgrading spaCy, never reuses stale values."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from essayscore.embedding_cache import EmbeddingCache, embed_with_cache
from essayscore.encoder import TextEncoder
from essayscore.features import FeatureExtractor, add_embedding_features, feature_names
from essayscore.features.registry import (
    FEATURE_INDEX,
    FEATURES,
    LEARNED_FEATURES,
    feature_code_fingerprint,
    text_feature_names,
)
from essayscore.text import has_prompt

log = logging.getLogger(__name__)


@dataclass
class Matrices:
    """Everything the model sees for every text, in data order."""

    feature_names: list[str]
    handcrafted: np.ndarray  # (n, F) float32, NaN allowed
    embeddings: np.ndarray  # (n, D) float32
    band: np.ndarray  # (n,) IELTS band (NaN for sources without one; "<4" rows at 3.5)
    source: np.ndarray  # (n,) source key per row ("ielts", "wi")
    ordinal: np.ndarray  # (n,) label's position on its source's own scale
    n_words: np.ndarray  # (n,)

    def rows(self, index: np.ndarray, features: list[int] | None = None, use_embeddings: bool = True):
        hand = self.handcrafted[index] if features is None else self.handcrafted[index][:, features]
        return hand, (self.embeddings[index] if use_embeddings else None), self.band[index]


def _feature_cache_path(cache_dir: Path, essays: pd.DataFrame, checker: str) -> Path:
    digest = hashlib.sha256()
    digest.update("\x00".join(text_feature_names()).encode())
    digest.update(feature_code_fingerprint().encode())
    digest.update(checker.encode())
    for eid in essays["essay_id"]:
        digest.update(eid.encode())
    return Path(cache_dir) / "features" / f"{digest.hexdigest()[:24]}.npy"


def handcrafted_features(essays: pd.DataFrame, cache_dir: Path,
                         extractor: FeatureExtractor | None = None) -> np.ndarray:
    """(n, F) text features in data order; the embedding-based and learned-detector columns are NaN (filled
    later). The text columns are cached per essay set."""
    extractor = extractor or FeatureExtractor()
    text_columns = [FEATURE_INDEX[n] for n in text_feature_names()]
    path = _feature_cache_path(cache_dir, essays, extractor.checker.name)
    out = np.full((len(essays), len(FEATURES)), np.nan, dtype=np.float32)
    if path.is_file():
        log.info("features: cache hit %s", path.name)
        out[:, text_columns] = np.load(path)
        return out
    detector, extractor.error_detector = extractor.error_detector, None
    try:
        values, _ = extractor.extract_many(list(essays["essay"]), list(essays["prompt"]), progress=True)
    finally:
        extractor.error_detector = detector
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, values[:, text_columns])
    out[:, text_columns] = values[:, text_columns]
    return out


def prompted(essays: pd.DataFrame) -> np.ndarray:
    """(n,) bool: which essays have a prompt (essayscore.text.has_prompt, the rule serving applies)."""
    return np.array([has_prompt(p) for p in essays["prompt"]], dtype=bool)


def essay_and_prompt_embeddings(essays: pd.DataFrame, encoder: TextEncoder, cache_dir: Path,
                                prompted_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Essay and prompt embeddings in data order. ``prompted_only``: embed only essays that have a prompt (the
    others get zero rows): when the model reads no embedding, they serve the prompt-similarity feature alone."""
    cache = EmbeddingCache(Path(cache_dir) / "embeddings", encoder.model_id)
    if prompted_only:
        with_prompt = prompted(essays)
        essay_emb = np.zeros((len(essays), encoder.dim), dtype=np.float32)
        if with_prompt.any():
            essay_emb[with_prompt] = embed_with_cache(encoder, list(essays["essay"][with_prompt]), cache,
                                                      progress=True)
    else:
        essay_emb = embed_with_cache(encoder, list(essays["essay"]), cache, progress=True)
    prompts = list(essays["prompt"])
    unique = sorted(set(prompts))
    unique_emb = embed_with_cache(encoder, unique, cache, progress=True)
    lookup = {p: i for i, p in enumerate(unique)}
    return essay_emb, unique_emb[[lookup[p] for p in prompts]]


def build_matrices(essays: pd.DataFrame, encoder: TextEncoder | None, cache_dir: Path,
                   extractor: FeatureExtractor | None = None, learned: np.ndarray | None = None,
                   prompted_only: bool = False) -> Matrices:
    """``learned``: (n, len(LEARNED_FEATURES)) error-detector features (out-of-fold where the detector was
    trained on the text); None leaves them NaN. ``encoder`` None: no embeddings (zero-width). ``prompted_only``:
    see :func:`essay_and_prompt_embeddings` (the embedding columns are then not for the model)."""
    hand = handcrafted_features(essays, cache_dir, extractor)
    if learned is not None:
        hand[:, [FEATURE_INDEX[n] for n in LEARNED_FEATURES]] = learned
    if encoder is not None:
        essay_emb, prompt_emb = essay_and_prompt_embeddings(essays, encoder, cache_dir, prompted_only)
        prompt_emb = np.where(prompted(essays)[:, None], prompt_emb, np.nan)
        hand = add_embedding_features(hand.copy(), essay_emb, prompt_emb)
    else:
        essay_emb = np.zeros((len(essays), 0), dtype=np.float32)
    source = essays["source"].astype(str).to_numpy() if "source" in essays else np.full(len(essays), "ielts")
    ordinal = essays["level_ordinal"].to_numpy(dtype=np.int64) if "level_ordinal" in essays else \
        np.clip(np.rint((essays["band"].to_numpy(dtype=np.float64) - 3.5) * 2), 0, 11).astype(np.int64)
    n_words = hand[:, FEATURE_INDEX["word_count"]].astype(np.float64)
    return Matrices(feature_names(), hand.astype(np.float32), essay_emb.astype(np.float32),
                    essays["band"].to_numpy(dtype=np.float64), source, ordinal, n_words)
