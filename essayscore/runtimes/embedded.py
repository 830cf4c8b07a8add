"""The embedded runtime: the artifact's EssayScorer in this process, each stage timed (features, tokenise, encoder,
trees); the encoder is the validated ONNX export the settings choose (by default the artifact's own int8), or
PyTorch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from essayscore.artifacts import Artifact
from essayscore.essay_scorer import EssayScorer
from essayscore.runtimes import Batch, Item

log = logging.getLogger(__name__)


class EmbeddedRuntime:
    name = "embedded"

    def __init__(self, artifact: Artifact | Path, scorer_kwargs: dict | None = None,
                 onnx_encoder_dir: Path | None = None, onnx_variant: str = "int8"):
        """``onnx_encoder_dir``: serve that ONNX export's ``onnx_variant`` instead of the PyTorch encoder
        (EssayScorer refuses it unless its model_id is the artifact's)."""
        self.artifact = Artifact.of(artifact)
        self.artifact_dir = self.artifact.dir
        scorer_kwargs = dict(scorer_kwargs or {})
        self.encoder_backend = "torch-fp32"
        if onnx_encoder_dir is not None:
            from essayscore.onnx_encoder import OnnxEncoder

            scorer_kwargs["encoder"] = OnnxEncoder.from_dir(onnx_encoder_dir, variant=onnx_variant)
            self.encoder_backend = f"onnx-{onnx_variant}"
        self.scorer = EssayScorer(self.artifact, **scorer_kwargs)
        self.version = self.scorer.version
        # warm up: first calls load spaCy / torch kernels; readiness is only reported after this
        self.scorer.score(["This is a short warm-up essay about schools and education."], ["Education"])
        self._ready = True

    @classmethod
    def from_settings(cls, artifact: Artifact | Path) -> EmbeddedRuntime:
        """The encoder the settings choose (the service and the batch CLI both load this way, so they agree):
        ``embedded_encoder="onnx"``: ``onnx_encoder_dir``, else the artifact's own export, else PyTorch."""
        from essayscore.settings import get_settings

        artifact = Artifact.of(artifact)
        s = get_settings()
        onnx_dir = None
        if s.embedded_encoder == "onnx":
            onnx_dir = s.onnx_encoder_dir or artifact.onnx_export(s.onnx_encoder_variant)
            if onnx_dir is None:
                log.warning("no %s ONNX encoder export for %s: the embedded runtime runs PyTorch",
                            s.onnx_encoder_variant, artifact.dir)
        return cls(artifact, onnx_encoder_dir=onnx_dir, onnx_variant=s.onnx_encoder_variant)

    def ready(self) -> bool:
        return self._ready

    def score(self, items: Sequence[Item]) -> Batch:
        if not items:
            return Batch([], {})
        timings: dict[str, float] = {}
        results = self.scorer.score_isolated([i.essay for i in items], [i.prompt for i in items], timings)
        return Batch(results, timings)
