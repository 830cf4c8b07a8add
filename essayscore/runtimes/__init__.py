"""Where the model runs, behind one interface: ``score(items) -> Batch`` and ``ready() -> bool``.

* ``embedded`` (default): :class:`essayscore.essay_scorer.EssayScorer` in this process: the encoder is the artifact's
  validated int8 ONNX export when it has one (``settings.embedded_encoder`` / ``onnx_encoder_dir``), else
  PyTorch; trees are XGBoost.
* ``triton``: the ``essay_scorer`` ensemble of a Triton server (``settings.triton_url``, HTTP or gRPC by
  ``settings.triton_protocol``), with timeouts and bounded retries; SHAP uses the FEATURE_VECTOR it returns.

Both return one :class:`essayscore.result.EssayResult` per item (scores plus the model input the explanation and
the warnings read) and per-stage timings, so the service formats, explains and warns the same way whatever the
runtime. Every artifact is opened as an :class:`essayscore.artifacts.Artifact`: hashes and the feature registry
are checked at load time in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from essayscore.artifacts import Artifact
from essayscore.result import EssayResult


class RuntimeUnavailable(RuntimeError):
    """The model backend cannot answer now (Triton down or timing out); the caller should answer 503."""


@dataclass(frozen=True)
class Item:
    essay: str
    prompt: str | None = None


@dataclass
class Batch:
    results: list[EssayResult | Exception]  # one per item, in order; an Exception for an item that failed alone
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds for the whole call


@runtime_checkable
class Runtime(Protocol):
    name: str
    version: str
    encoder_backend: str  # "torch-fp32", "onnx-int8", ... or "triton"
    artifact: Artifact

    def score(self, items: Sequence[Item]) -> Batch: ...

    def ready(self) -> bool: ...


def load_runtime(kind: str, artifact: Artifact | Path) -> Runtime:
    if kind == "embedded":
        from essayscore.runtimes.embedded import EmbeddedRuntime

        return EmbeddedRuntime.from_settings(artifact)
    if kind == "triton":
        from essayscore.runtimes.triton import TritonRuntime

        return TritonRuntime(artifact)
    raise ValueError(f"unknown runtime {kind!r} (embedded or triton)")


__all__ = ["Batch", "EssayResult", "Item", "Runtime", "RuntimeUnavailable", "load_runtime"]
