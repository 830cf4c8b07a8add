"""The whole in-process path for one artifact version: text -> features + embedding -> model -> EssayResult.

Training, the batch CLI, the Bento's embedded runtime and the Triton python models all call these functions,
so there is one implementation of every step.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from essayscore.artifacts import Artifact, ArtifactError
from essayscore.encoder import TextEncoder
from essayscore.features import FeatureExtractor, add_embedding_features
from essayscore.features.extractor import with_error_detector
from essayscore.result import EssayResult
from essayscore.scoring_model import TreeModels
from essayscore.text import has_prompt
from essayscore.windows import pool_windows

PROMPT_CACHE_SIZE = 1024  # distinct prompts whose embeddings are kept (384-1024 floats each)
OVERLAP_THREADS = 8  # encoder threads per scorer when the encoder overlaps the features; more requests queue


def _add(timings_ms: dict[str, float] | None, **seconds: float) -> None:
    if timings_ms is not None:
        for stage, s in seconds.items():
            timings_ms[stage] = timings_ms.get(stage, 0.0) + s * 1e3


class LruCache:
    """A small thread-safe least-recently-used map (the service scores requests on several threads)."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        """The value, or None when absent (another thread may evict at any time: look up once)."""
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def artifact_extractor(artifact: Artifact, extractor: FeatureExtractor | None = None) -> FeatureExtractor:
    """A feature extractor with the artifact's error detector (or none): a caller's extractor gets it too, since
    without it the ``learned_errors`` columns are NaN and the scores are not the model's."""
    return with_error_detector(artifact.error_detector(), extractor)


class EssayScorer:
    def __init__(self, artifact: Artifact | Path, encoder: TextEncoder | None = None,
                 extractor: FeatureExtractor | None = None, trees: TreeModels | None = None,
                 overlap_encoder: bool | None = None):
        """``overlap_encoder``: run the encoder beside the features (default: the ``overlap_encoder`` setting);
        the scores are the same either way."""
        self.artifact = Artifact.of(artifact)
        self.artifact_dir = self.artifact.dir
        self.version = self.artifact.version
        enc = self.artifact.encoder_config
        if encoder is None:
            try:  # torch only when no other backend is given
                from essayscore.torch_encoder import TorchEncoder
            except ModuleNotFoundError as exc:
                raise ArtifactError(
                    f"artifact {self.version} would need the PyTorch encoder ({exc}): the serving install has no "
                    "torch and runs the artifact's ONNX export (encoder_onnx/); export one with `essayscore "
                    "export-onnx`, or install the train extra (pip install 'essayscore[train]')") from exc
            encoder = TorchEncoder(enc["name"], window=enc["window"], stride=enc["stride"])
        self.encoder: TextEncoder = encoder
        if self.encoder.model_id != enc["model_id"]:
            raise ArtifactError(f"artifact {self.version} was trained with encoder {enc['model_id']!r}, "
                                f"but {self.encoder.model_id!r} is loaded")
        self.extractor = artifact_extractor(self.artifact, extractor)
        self.model = self.artifact.scoring_model(trees)
        self._prompt_cache = LruCache(PROMPT_CACHE_SIZE)
        if overlap_encoder is None:
            from essayscore.settings import get_settings

            overlap_encoder = get_settings().overlap_encoder
        # one encoder thread per request in flight (the service runs requests on threads of its own)
        self._overlap = (ThreadPoolExecutor(max_workers=OVERLAP_THREADS, thread_name_prefix="encoder")
                         if overlap_encoder else None)

    def features(self, essays: Sequence[str], prompts: Sequence[str | None]) -> tuple[np.ndarray, list]:
        return self.extractor.extract_many(list(essays), list(prompts))

    def embed(self, essays: Sequence[str], prompts: Sequence[str | None],
              timings_ms: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Essay embeddings and prompt embeddings (NaN rows where there is no prompt). Prompts repeat across
        requests (one task prompt, many essays), so their embeddings are kept in a small in-process LRU."""
        known = {p: self._prompt_cache.get(p) for p in dict.fromkeys(p for p in prompts if has_prompt(p))}
        missing = [p for p, vector in known.items() if vector is None]
        t0 = time.perf_counter()
        windows = self.encoder.windows(list(essays) + missing)
        t1 = time.perf_counter()
        vectors = pool_windows(self.encoder.embed_windows(windows), windows.owner, windows.n_tokens,
                               len(essays) + len(missing))
        t2 = time.perf_counter()
        _add(timings_ms, tokenise_ms=t1 - t0, encoder_ms=t2 - t1)
        essay_emb = vectors[: len(essays)]
        for prompt, vector in zip(missing, vectors[len(essays):]):
            known[prompt] = vector
            self._prompt_cache.put(prompt, vector)
        prompt_emb = np.full_like(essay_emb, np.nan)
        for i, text in enumerate(prompts):
            if has_prompt(text):
                prompt_emb[i] = known[text]
        return essay_emb, prompt_emb

    def score(self, essays: Sequence[str], prompts: Sequence[str | None] | None = None,
              timings_ms: dict[str, float] | None = None) -> list[EssayResult]:
        """Score essays together; per-stage milliseconds (features, tokenise, encoder, trees) are added into
        ``timings_ms`` when given."""
        prompts = list(prompts) if prompts is not None else [None] * len(essays)
        embed_timings: dict[str, float] = {}
        # the encoder releases the GIL (ONNX Runtime, torch): it runs on a thread of its own while the features
        # (spaCy, harper, Python) run here, so one request takes about the longer of the two, not their sum
        embedding = (self._overlap.submit(self.embed, essays, prompts, embed_timings) if self._overlap is not None
                     else None)
        t0 = time.perf_counter()
        try:
            hand, matches = self.features(essays, prompts)
        finally:
            _add(timings_ms, features_ms=time.perf_counter() - t0)
            if embedding is not None and not embedding.done():
                wait([embedding])  # never leave the encoder running past this call, even on an error
        essay_emb, prompt_emb = (embedding.result() if embedding is not None
                                 else self.embed(essays, prompts, embed_timings))
        _add(timings_ms, **{k: v / 1e3 for k, v in embed_timings.items()})
        t1 = time.perf_counter()
        hand = add_embedding_features(hand, essay_emb, prompt_emb)
        x = self.model.transform(hand, essay_emb)
        pred = self.model.predict(x)
        _add(timings_ms, trees_ms=time.perf_counter() - t1)
        return [pred.result(i, self.version, x[i], hand[i], matches[i]) for i in range(len(essays))]

    def score_isolated(self, essays: Sequence[str], prompts: Sequence[str | None],
                       timings_ms: dict[str, float] | None = None) -> list[EssayResult | Exception]:
        """Like :meth:`score`, but if the batch fails, each essay is scored alone so that only the essay that
        breaks gets an Exception in its place (the batch CLI and the service both rely on this)."""
        try:
            return list(self.score(essays, prompts, timings_ms))
        except Exception:  # noqa: BLE001 - narrowed down essay by essay below
            out: list[EssayResult | Exception] = []
            for essay, prompt in zip(essays, prompts):
                try:
                    out.extend(self.score([essay], [prompt], timings_ms))
                except Exception as exc:  # noqa: BLE001 - reported as that essay's error
                    out.append(exc)
            return out
