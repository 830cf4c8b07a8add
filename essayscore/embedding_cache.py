"""On-disk embedding cache shared across runs and processes.

Key = ``sha256(model_id + "\\0" + text.flatten(essay))``, so formatting variants of an essay share an entry and
different encoders / window settings (which change ``model_id``) never collide. One ``.npy`` file per key in
256 sharded folders (``<dir>/<key[:2]>/<key>.npy``); each file is written to a temporary name and moved into
place with ``os.replace``, so concurrent runs can share a directory and a reader never sees a partial file.
Entries are immutable: two writers of the same key write the same vector.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from essayscore import text as text_mod

if TYPE_CHECKING:
    from essayscore.encoder import TextEncoder

CHUNK_TEXTS = 256  # embed_with_cache writes to the cache after every chunk, so an interrupted run keeps its work


class EmbeddingCache:
    def __init__(self, directory: Path, model_id: str):
        self.directory = Path(directory)
        self.model_id = model_id

    def key(self, text: str) -> str:
        payload = self.model_id + "\0" + text_mod.flatten(text)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npy"

    # ---- reads -------------------------------------------------------------------------------------

    def get(self, text: str) -> np.ndarray | None:
        return self._load(self.path(self.key(text)))

    def get_many(self, texts: Sequence[str]) -> tuple[list[np.ndarray | None], list[int]]:
        """``(vectors, missing)``: the cached float32 vector per text (``None`` where absent) and the indices
        of the texts that are absent."""
        vectors = [self.get(t) for t in texts]
        return vectors, [i for i, v in enumerate(vectors) if v is None]

    def __contains__(self, text: str) -> bool:
        return self.path(self.key(text)).is_file()

    # ---- writes ------------------------------------------------------------------------------------

    def put(self, text: str, vector: np.ndarray) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        if vector.ndim != 1 or not np.all(np.isfinite(vector)):
            raise ValueError("cache entries must be finite 1-d vectors")
        target = self.path(self.key(text))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, vector, allow_pickle=False)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_many(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
        for text, vector in zip(texts, vectors):
            self.put(text, vector)

    # ---- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _load(path: Path) -> np.ndarray | None:
        try:
            vector = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError):  # unreadable entry (e.g. disk trouble): treat as a miss
            return None
        return vector.astype(np.float32, copy=False)


def embed_with_cache(
    encoder: TextEncoder, texts: Sequence[str], cache: EmbeddingCache | None, progress: bool = False
) -> np.ndarray:
    """``(len(texts), encoder.dim)`` float32; only texts missing from ``cache`` are encoded (each distinct
    flattened text once), and their vectors are stored. ``cache=None`` encodes everything."""
    texts = list(texts)
    if cache is None:
        return encoder.encode(texts, progress=progress)
    if cache.model_id != encoder.model_id:
        raise ValueError(f"cache is for {cache.model_id!r}, encoder is {encoder.model_id!r}")

    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    vectors, missing = cache.get_many(texts)
    for i, vector in enumerate(vectors):
        if vector is not None:
            if vector.shape != (encoder.dim,):
                raise ValueError(f"cached vector has shape {vector.shape}, expected ({encoder.dim},)")
            out[i] = vector

    # one encoding per distinct flattened text among the misses
    by_flat: dict[str, list[int]] = {}
    for i in missing:
        by_flat.setdefault(text_mod.flatten(texts[i]), []).append(i)
    unique = list(by_flat)
    chunks = range(0, len(unique), CHUNK_TEXTS)
    if progress and unique:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"embedding {len(unique)} new texts", unit="chunk")
    for start in chunks:
        chunk = unique[start : start + CHUNK_TEXTS]
        # encode and key by an original text: flatten() is not idempotent (a line starting with punctuation
        # gains a space), so re-flattening the flat text would give another key and another embedding
        originals = [texts[by_flat[flat][0]] for flat in chunk]
        embedded = encoder.encode(originals)
        cache.put_many(originals, embedded)
        for flat, vector in zip(chunk, embedded):
            out[by_flat[flat]] = vector
    return out
