"""Where the model runs, behind one interface: ``score(items) -> list[Scored]`` and ``ready() -> bool``.

* ``embedded`` (default): :class:`essayscore.pipeline.EssayScorer` in this process: the encoder is the artifact's
  validated int8 ONNX export when it has one (``settings.embedded_encoder`` / ``onnx_encoder_dir``), else
  PyTorch; trees are XGBoost.
* ``triton``: the ``essay_scorer`` ensemble of a Triton server (``settings.triton_url``, HTTP or gRPC by
  ``settings.triton_protocol``), with timeouts and bounded retries; SHAP uses the FEATURE_VECTOR it returns.

Both return :class:`essayscore.pipeline.Scored` (``result``, ``x``, ``handcrafted``, ``matches``) plus per-stage
timings, so the service formats, explains and warns the same way whatever the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from essayscore.pipeline import Scored


class RuntimeUnavailable(RuntimeError):
    """The model backend cannot answer now (Triton down or timing out); the caller should answer 503."""


@dataclass(frozen=True)
class Item:
    essay: str
    prompt: str | None = None


@dataclass
class Batch:
    scored: list[Scored | Exception]  # one per item, in order; an Exception for an item that failed alone
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds for the whole call


@runtime_checkable
class Runtime(Protocol):
    name: str
    version: str
    encoder_backend: str  # "torch-fp32", "onnx-int8", ... or "triton"
    artifact_dir: Path

    def score(self, items: Sequence[Item]) -> Batch: ...

    def ready(self) -> bool: ...


def load_runtime(kind: str, artifact_dir: Path) -> Runtime:
    if kind == "embedded":
        from essayscore.runtimes.embedded import EmbeddedRuntime

        return EmbeddedRuntime.from_settings(artifact_dir)
    if kind == "triton":
        from essayscore.runtimes.triton import TritonRuntime

        return TritonRuntime(artifact_dir)
    raise ValueError(f"unknown runtime {kind!r} (embedded or triton)")


__all__ = ["Batch", "Item", "Runtime", "RuntimeUnavailable", "Scored", "load_runtime"]
