"""Features and embeddings for a set of essays, cached on disk so retraining neither re-extracts nor re-embeds."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from essayscore.embedding_cache import EmbeddingCache, embed_with_cache
from essayscore.encoder import Encoder
from essayscore.features import FeatureExtractor, add_embedding_features, feature_names
from training.fit import Matrices

log = logging.getLogger(__name__)


def _feature_cache_path(cache_dir: Path, essays: pd.DataFrame, checker: str) -> Path:
    digest = hashlib.sha256()
    digest.update("\x00".join(feature_names()).encode())
    digest.update(checker.encode())
    for eid in essays["essay_id"]:
        digest.update(eid.encode())
    return Path(cache_dir) / "features" / f"{digest.hexdigest()[:24]}.npy"


def handcrafted_features(essays: pd.DataFrame, cache_dir: Path, extractor: FeatureExtractor | None = None) -> np.ndarray:
    """(n, F) text features in data order (embedding-based columns still NaN); cached per essay set."""
    extractor = extractor or FeatureExtractor()
    path = _feature_cache_path(cache_dir, essays, extractor.checker.name)
    if path.is_file():
        log.info("features: cache hit %s", path.name)
        return np.load(path)
    values, _ = extractor.extract_many(list(essays["essay"]), list(essays["prompt"]), progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, values)
    return values


def essay_and_prompt_embeddings(essays: pd.DataFrame, encoder: Encoder, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    cache = EmbeddingCache(Path(cache_dir) / "embeddings", encoder.model_id)
    essay_emb = embed_with_cache(encoder, list(essays["essay"]), cache, progress=True)
    prompts = list(essays["prompt"])
    unique = sorted(set(prompts))
    unique_emb = embed_with_cache(encoder, unique, cache, progress=True)
    lookup = {p: i for i, p in enumerate(unique)}
    return essay_emb, unique_emb[[lookup[p] for p in prompts]]


def build_matrices(essays: pd.DataFrame, encoder: Encoder, cache_dir: Path,
                   extractor: FeatureExtractor | None = None) -> Matrices:
    hand = handcrafted_features(essays, cache_dir, extractor)
    essay_emb, prompt_emb = essay_and_prompt_embeddings(essays, encoder, cache_dir)
    has_prompt = essays["prompt"].str.strip().astype(bool).to_numpy()
    prompt_emb = np.where(has_prompt[:, None], prompt_emb, np.nan)
    hand = add_embedding_features(hand.copy(), essay_emb, prompt_emb)
    return Matrices(feature_names(), hand.astype(np.float32), essay_emb.astype(np.float32),
                    essays["band"].to_numpy(dtype=np.float64))
