"""Validating an exported variant against PyTorch: the tolerances (cosine floors, QWK tolerance), the typed
:class:`ExportValidationError`, the window / text agreement of one graph (:func:`validate_variant`, run batched
exactly as serving runs it) and the end-to-end band / QWK check through ``EssayScorer`` (:class:`BandComparer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from essayscore.onnx_encoder import (
    META_FILE,
    OUTPUT_NAME,
    VARIANT_FILES,
    OnnxEncoder,
    make_session,
)
from essayscore.windows import Windows, length_sorted_batches, pool_windows

# Minimum cosine (PyTorch vs ONNX window embedding, min over windows) per variant. int8's is a sanity floor that
# catches a broken quantisation; its acceptance is the end-to-end QWK check (``band_change``).
DEFAULT_THRESHOLDS = {"fp32": 0.999, "fp16": 0.999, "int8": 0.98}
QWK_TOLERANCE = 0.01
REPORT_FILE = "export_report.json"


class ExportValidationError(RuntimeError):
    """An exported variant does not match PyTorch closely enough (nothing was written). ``report`` has the numbers."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)


def compare(reference: np.ndarray, candidate: np.ndarray, windows: Windows, n_texts: int) -> dict:
    """Window-level (the graph's output) and text-level (after ``pool_windows``) agreement."""
    finite = bool(np.all(np.isfinite(candidate)))
    window_cos = cosine_rows(reference, candidate) if finite else np.array([-1.0])
    ref_text = pool_windows(reference, windows.owner, windows.n_tokens, n_texts)
    text_cos = cosine_rows(ref_text, pool_windows(candidate, windows.owner, windows.n_tokens, n_texts)) \
        if finite else np.array([-1.0])
    return {
        "finite": finite,
        "cosine_min": float(window_cos.min()),
        "cosine_mean": float(window_cos.mean()),
        "text_cosine_min": float(text_cos.min()),
        "max_abs_diff": float(np.abs(reference - candidate).max()) if finite else float("inf"),
        "n_windows": len(windows),
        "n_texts": n_texts,
    }



def run_graph(path: Path, windows: Windows, batch_size: int = 16, providers: Sequence | None = None,
              per_text: bool | None = None) -> np.ndarray:
    """Window embeddings from an ONNX file, batched as :meth:`OnnxEncoder.embed_windows` serves it
    (``length_sorted_batches``). ``per_text`` None: as serving decides for this file, i.e. the int8 graph
    encodes each text's windows alone (its activation scales are per batch), the others mix texts."""
    path = Path(path)
    session = make_session(path, providers)
    if session.get_outputs()[0].type != "tensor(float)":
        raise TypeError(f"{path.name}: output is {session.get_outputs()[0].type}, expected tensor(float)")
    if per_text is None:
        per_text = path.name == VARIANT_FILES["int8"]
    out = np.empty((len(windows), session.get_outputs()[0].shape[-1]), dtype=np.float32)
    for batch, width in length_sorted_batches(windows, batch_size, per_text=per_text):
        out[batch] = session.run([OUTPUT_NAME], {"input_ids": windows.input_ids[batch, :width],
                                                 "attention_mask": windows.attention_mask[batch, :width]})[0]
    return out


def validate_variant(variant: str, path: Path, reference: np.ndarray, windows: Windows, n_texts: int,
                     threshold: float, batch_size: int = 16,
                     extra_check: Callable[[Path], dict] | None = None) -> tuple[dict, str | None]:
    """Run the graph at ``path`` on ``windows`` and judge it against the PyTorch ``reference``: passes when its
    output is finite, its min window cosine >= ``threshold`` and then ``extra_check(path)`` (if given) returns
    ``passed``. Returns the report entry and the failure message (None: passed)."""
    entry: dict = {}
    t0 = time.perf_counter()
    try:
        candidate = run_graph(path, windows, batch_size)
    except Exception as exc:  # noqa: BLE001 - reported as this variant's failure, e.g. an EP without kernels for it
        entry.update(passed=False, error=f"{type(exc).__name__}: {exc}")
        return entry, f"{variant}: cannot run ({entry['error'][:200]})"
    entry["validate_s"] = round(time.perf_counter() - t0, 3)
    entry.update(compare(reference, candidate, windows, n_texts))
    entry["threshold"] = threshold
    entry["passed"] = bool(entry["finite"] and entry["cosine_min"] >= threshold)
    if not entry["passed"]:
        return entry, (f"{variant}: min cosine {entry['cosine_min']:.6f} < {threshold} "
                       f"(max abs diff {entry['max_abs_diff']:.3g}, finite={entry['finite']})")
    if extra_check is not None:
        t0 = time.perf_counter()
        check = extra_check(path)
        check["seconds"] = round(time.perf_counter() - t0, 3)
        entry["band_check"] = check
        if not check.get("passed", False):
            entry["passed"] = False
            return entry, f"{variant}: end-to-end check failed ({check.get('reason', check)})"
    return entry, None


# --------------------------------------------------------------------------------------------------------
# end-to-end band change
# --------------------------------------------------------------------------------------------------------


class _MemoExtractor:
    """Wraps a FeatureExtractor so that scoring the same essays with two encoders extracts features once."""

    def __init__(self, extractor):
        self.extractor = extractor
        self._memo: dict = {}

    def extract_many(self, essays, prompts, progress: bool = False):
        key = (tuple(essays), tuple(prompts))
        if key not in self._memo:
            self._memo[key] = self.extractor.extract_many(essays, prompts, progress=progress)
        return self._memo[key]

    def __getattr__(self, name):
        return getattr(self.extractor, name)


class BandComparer:
    """Scores a fixed set of essays through ``EssayScorer`` with the artifact's PyTorch encoder once, then with
    any ONNX encoder, and reports how the bands move (features are extracted once and shared)."""

    def __init__(self, artifact_dir: Path, essays: Sequence[str], prompts: Sequence[str | None],
                 labels: Sequence[float] | None = None):
        from essayscore.artifacts import Artifact
        from essayscore.essay_scorer import EssayScorer
        from essayscore.features import FeatureExtractor

        self.artifact = Artifact(Path(artifact_dir))
        self.artifact_dir = self.artifact.dir
        self.essays, self.prompts = list(essays), list(prompts)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float64)
        # duck-typed: the memo wrapper delegates every other attribute to the FeatureExtractor
        memo = _MemoExtractor(FeatureExtractor(error_detector=self.artifact.error_detector()))
        self.extractor = cast(FeatureExtractor, memo)
        t0 = time.perf_counter()
        self.torch_scorer = EssayScorer(self.artifact, extractor=self.extractor)
        self.torch_raw, self.torch_band = self._score(self.torch_scorer)
        self.torch_seconds = time.perf_counter() - t0
        self.encoder_config = self.artifact.encoder_config

    def _score(self, scorer) -> tuple[np.ndarray, np.ndarray]:
        scored = scorer.score(self.essays, self.prompts)
        return (np.array([s.ielts_raw for s in scored]), np.array([s.ielts_band for s in scored]))

    def _qwk(self, band: np.ndarray) -> float | None:
        if self.labels is None:
            return None
        from essayscore.bands import half_band_index
        from training.metrics import qwk

        return qwk(half_band_index(self.labels), half_band_index(band))

    def onnx_encoder(self, onnx_path: Path, **kwargs) -> OnnxEncoder:
        onnx_path = Path(onnx_path)
        source = onnx_path.parent if (onnx_path.parent / META_FILE).is_file() else self.encoder_config
        enc = self.encoder_config
        return OnnxEncoder(onnx_path, source, window=enc["window"], stride=enc["stride"], model_id=enc["model_id"],
                           **kwargs)

    def compare(self, onnx_path: Path, qwk_tolerance: float = QWK_TOLERANCE, **encoder_kwargs) -> dict:
        from essayscore.essay_scorer import EssayScorer

        t0 = time.perf_counter()
        scorer = EssayScorer(self.artifact_dir, encoder=self.onnx_encoder(onnx_path, **encoder_kwargs),
                             extractor=self.extractor)
        raw, band = self._score(scorer)
        result: dict[str, Any] = {
            "n_essays": len(self.essays),
            "max_abs_raw_band_delta": float(np.max(np.abs(raw - self.torch_raw))),
            "mean_abs_raw_band_delta": float(np.mean(np.abs(raw - self.torch_raw))),
            "half_band_changed_share": float(np.mean(band != self.torch_band)),
            "qwk_torch": self._qwk(self.torch_band),
            "qwk_onnx": self._qwk(band),
            "onnx_scoring_s": round(time.perf_counter() - t0, 3),
            "torch_scoring_s": round(self.torch_seconds, 3),
        }
        if result["qwk_torch"] is not None:
            result["qwk_delta"] = result["qwk_onnx"] - result["qwk_torch"]
            result["qwk_tolerance"] = qwk_tolerance
            result["passed"] = bool(abs(result["qwk_delta"]) <= qwk_tolerance)
            if not result["passed"]:
                result["reason"] = f"test QWK moved by {result['qwk_delta']:+.4f} (> {qwk_tolerance})"
        else:
            result["passed"] = True  # nothing to judge without labels
        return result


def band_change(artifact_dir: Path, onnx_path: Path, essays: Sequence[str], prompts: Sequence[str | None],
                labels: Sequence[float] | None = None, qwk_tolerance: float = QWK_TOLERANCE) -> dict:
    """Score ``essays`` through ``EssayScorer`` with the artifact's PyTorch encoder and with the ONNX encoder at
    ``onnx_path``: max |Δ raw band|, share of half bands changed and, given ``labels``, QWK of both (``passed``:
    |Δ QWK| <= ``qwk_tolerance``)."""
    return BandComparer(artifact_dir, essays, prompts, labels).compare(onnx_path, qwk_tolerance)

