"""The embedded runtime: the artifact's EssayScorer in this process, each stage timed (features, embedding,
trees)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from essayscore.pipeline import EssayScorer
from essayscore.runtimes import Batch, Item


class EmbeddedRuntime:
    name = "embedded"

    def __init__(self, artifact_dir: Path, scorer_kwargs: dict | None = None):
        self.artifact_dir = Path(artifact_dir)
        self.scorer = EssayScorer(self.artifact_dir, **(scorer_kwargs or {}))
        self.version = self.scorer.version
        # warm up: first calls load spaCy / torch kernels; readiness is only reported after this
        self.scorer.score(["This is a short warm-up essay about schools and education."], ["Education"])
        self._ready = True

    def ready(self) -> bool:
        return self._ready

    def score(self, items: Sequence[Item]) -> Batch:
        if not items:
            return Batch([], {})
        timings: dict[str, float] = {}
        scored = self.scorer.score_isolated([i.essay for i in items], [i.prompt for i in items], timings)
        return Batch(scored, timings)
