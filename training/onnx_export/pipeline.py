"""The export pipeline, :func:`export_encoder`: build every requested variant in a staging folder inside the
output, validate each against PyTorch, write the serving files (tokenizer, backbone config, ``onnx_encoder.json``)
and ``export_report.json``, and move only what passed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from essayscore.onnx_encoder import INPUT_NAMES, META_FILE, OUTPUT_NAME, VARIANT_FILES
from essayscore.torch_encoder import TorchEncoder
from training.onnx_export import graph
from training.onnx_export.graph import OPSET, VARIANTS
from training.onnx_export.validate import (
    DEFAULT_THRESHOLDS,
    REPORT_FILE,
    ExportValidationError,
    validate_variant,
)

log = logging.getLogger(__name__)


def write_serving_files(encoder: TorchEncoder, directory: Path, model_id: str | None = None) -> list[str]:
    """Tokenizer files, the backbone config (no weights) and ``onnx_encoder.json``: what OnnxEncoder needs. The
    tokenizer is the one training tokenised with (``tokenizer.json`` of the ``tokenizers`` library), so serving
    needs neither transformers nor torch."""
    before = set(os.listdir(directory))
    encoder.save_tokenizer(directory)
    meta = {"name": encoder.name, "model_id": model_id or encoder.model_id, "window": encoder.window,
            "stride": encoder.stride, "dim": encoder.dim, "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME,
            "opset": OPSET, "variants": {}}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return sorted(set(os.listdir(directory)) - before)


def export_encoder(
    encoder: TorchEncoder,
    out_dir: Path,
    variants: Sequence[str] = VARIANTS,
    validation_texts: Sequence[str] = (),
    thresholds: Mapping[str, float] | None = None,
    batch_size: int = 16,
    extra_checks: Mapping[str, Callable[[Path], dict]] | None = None,
    report_extra: dict | None = None,
    keep_passing: bool = False,
) -> dict:
    """Export, validate and (only if every variant passes) move the variants into ``out_dir``; return the report.

    ``validation_texts``: real essays, windowed by ``encoder.windows``; every window's ONNX embedding is compared
    with ``encoder.module``'s, the graph run batched as serving runs it (int8: each text's windows alone). A
    variant passes when its min cosine >= ``thresholds[variant]`` and its output is finite.
    ``extra_checks[variant](temp_onnx_path)`` runs after that (e.g. the end-to-end band check) and must
    return a dict with ``passed``; it is stored in the report. Raises :class:`ExportValidationError` on failure:
    by default nothing is written then; with ``keep_passing`` the variants that passed (plus the tokenizer files
    and the report, which marks the others refused) are written before the error is raised. A failed variant
    never reaches ``out_dir``.
    """
    variants = list(dict.fromkeys(variants))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {list(variants)}")
    texts = [t for t in validation_texts if t and t.strip()]
    if not texts:
        raise ValueError("validation_texts must contain at least one non-empty essay")
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    windows = encoder.windows(texts)
    t0 = time.perf_counter()
    reference = encoder.embed_windows(windows)
    report: dict = {
        "model_id": encoder.model_id, "encoder": encoder.name, "window": encoder.window, "stride": encoder.stride,
        "dim": encoder.dim, "opset": OPSET, "exporter": "torch.onnx.export(dynamo=False)",
        "thresholds": {"cosine_min": {v: limits[v] for v in variants}},
        "validation": {"n_texts": len(texts), "n_windows": len(windows), "batch_size": batch_size,
                       "per_text": [v for v in variants if v == "int8"],  # batched as served
                       "providers": ["CPUExecutionProvider"]},
        "timings_s": {"torch_reference": round(time.perf_counter() - t0, 3)},
        "variants": {},
        **(report_extra or {}),
    }
    staging = Path(tempfile.mkdtemp(prefix=".export-tmp-", dir=out_dir))
    try:
        paths = {v: staging / VARIANT_FILES[v] for v in VARIANTS}
        build = {"fp32": lambda: graph.export_fp32(encoder, paths["fp32"]),
                 "fp16": lambda: graph.convert_fp16(paths["fp32"], paths["fp16"]),
                 "int8": lambda: graph.quantize_int8(paths["fp32"], paths["int8"])}
        t0 = time.perf_counter()
        build["fp32"]()  # the others derive from it
        report["timings_s"]["export_fp32"] = round(time.perf_counter() - t0, 3)
        serving_files = write_serving_files(encoder, staging)

        failures = []
        for variant in variants:
            entry: dict = {"file": VARIANT_FILES[variant]}
            if variant != "fp32":
                t0 = time.perf_counter()
                built = build[variant]()
                if variant == "int8":
                    entry["fp32_matmuls"] = built
                entry["build_s"] = round(time.perf_counter() - t0, 3)
            entry["size_mb"] = round(paths[variant].stat().st_size / 1e6, 2)
            check, failure = validate_variant(variant, paths[variant], reference, windows, len(texts),
                                              limits[variant], batch_size, (extra_checks or {}).get(variant))
            entry.update(check)
            if failure is not None:
                failures.append(failure)
            report["variants"][variant] = entry
            log.info("%s: %s", variant, entry)

        report["timings_s"]["total"] = round(time.perf_counter() - started, 3)
        passed = [v for v in variants if report["variants"][v]["passed"]]
        report["refused"] = [v for v in variants if v not in passed]
        if failures and not (keep_passing and passed):
            raise ExportValidationError("ONNX export refused, nothing written to "
                                        f"{out_dir}: " + "; ".join(failures), report)

        meta_path = staging / META_FILE
        meta = json.loads(meta_path.read_text())
        meta["variants"] = {v: VARIANT_FILES[v] for v in passed}
        meta_path.write_text(json.dumps(meta, indent=2))
        report["files"] = [VARIANT_FILES[v] for v in passed] + serving_files + [REPORT_FILE]
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2))
        for name in report["files"]:  # same filesystem: each move is atomic
            os.replace(staging / name, out_dir / name)
        if failures:
            raise ExportValidationError(f"ONNX export of {report['refused']} refused (not written; "
                                        f"{passed} written to {out_dir}): " + "; ".join(failures), report)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
