"""The embedded runtime: the artifact's EssayScorer in this process, the same steps as ``EssayScorer.score``
with each stage timed (features, embedding, trees)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from essayscore.features import add_embedding_features
from essayscore.pipeline import EssayScorer, Scored
from essayscore.runtimes import Batch, Item


class EmbeddedRuntime:
    name = "embedded"

    def __init__(self, artifact_dir: Path, scorer_kwargs: dict | None = None):
        self.artifact_dir = Path(artifact_dir)
        self.scorer = EssayScorer(self.artifact_dir, **(scorer_kwargs or {}))
        self.version = self.scorer.version
        # warm up: first calls load spaCy / torch kernels; readiness is only reported after this
        self._score_chunk([Item("This is a short warm-up essay about schools and education.", "Education")])
        self._ready = True

    def ready(self) -> bool:
        return self._ready

    def _score_chunk(self, items: Sequence[Item]) -> tuple[list[Scored], dict[str, float]]:
        s = self.scorer
        essays = [i.essay for i in items]
        prompts = [i.prompt for i in items]
        t0 = time.perf_counter()
        hand, matches = s.features(essays, prompts)
        t1 = time.perf_counter()
        essay_emb, prompt_emb = s.embed(essays, prompts)
        t2 = time.perf_counter()
        hand = add_embedding_features(hand, essay_emb, prompt_emb)
        x = s.model.transform(hand, essay_emb)
        pred = s.model.predict(x)
        t3 = time.perf_counter()
        scored = [Scored(pred.row(i), x[i], hand[i], matches[i]) for i in range(len(items))]
        return scored, {"features_ms": (t1 - t0) * 1e3, "embedding_ms": (t2 - t1) * 1e3,
                        "trees_ms": (t3 - t2) * 1e3}

    def score(self, items: Sequence[Item]) -> Batch:
        if not items:
            return Batch([], {})
        try:
            scored, timings = self._score_chunk(items)
            return Batch(list(scored), timings)
        except Exception:  # noqa: BLE001 - one item broke the chunk: score one by one so only it fails
            out: list[Scored | Exception] = []
            timings: dict[str, float] = {}
            for item in items:
                try:
                    one, t = self._score_chunk([item])
                    out.append(one[0])
                    for k, v in t.items():
                        timings[k] = timings.get(k, 0.0) + v
                except Exception as exc:  # noqa: BLE001 - reported as that item's error
                    out.append(exc)
            return Batch(out, timings)
