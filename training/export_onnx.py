"""Export the frozen encoder (``MeanPooledEncoder``: backbone + masked mean pooling) to ONNX, validate, ship.

    python -m training.export_onnx --model latest --out exports/latest-onnx [--variants fp32 fp16 int8]

Writes ``encoder.fp32.onnx``, ``encoder.fp16.onnx``, ``encoder.int8.onnx``, the tokenizer files, the backbone
``config.json`` (no weights), ``onnx_encoder.json`` (window / stride / model_id / dim) and ``export_report.json``
(thresholds, cosines, max abs diffs, band changes, timings). Load with ``OnnxEncoder.from_dir(out, variant)``.

Graph: inputs ``input_ids`` / ``attention_mask`` int64 ``(batch, sequence)``, output ``embedding`` float32
``(batch, dim)``; exported with the TorchScript exporter (``dynamo=False``), opset 17, eager attention. The
dynamo exporter (the torch 2.13 default) needs ``onnxscript``, which is not a project dependency.

Variants:

* ``fp32``: the exported graph as is.
* ``fp16``: for GPU serving. ``onnxconverter_common.float16`` with fp32 inputs/outputs kept, LayerNormalization,
  Softmax and reductions blocked (RoBERTa's fp16 overflow in those), and the pooling head (the nodes outside the
  backbone) kept in fp32. Validated here on the CPU execution provider.
* ``int8``: ONNX Runtime dynamic quantisation (QInt8 weights, per output channel, MatMul/Gemm with constant
  weights; the feed-forward output projections stay fp32, see :func:`ffn_output_matmuls`) for CPU serving. Its cosine is lower by design; the CLI accepts it only if the artifact's test-split
  QWK moves by at most ``--qwk-tolerance`` when the ONNX encoder replaces the PyTorch one in ``EssayScorer``.

Every variant is written to a temporary folder inside ``out``, validated against PyTorch on real essays
(windowed exactly as :meth:`Encoder.windows` does) and moved into place only if it passes. A refused variant is
never written and :class:`ExportValidationError` is raised; ``export_encoder`` then writes nothing at all unless
``keep_passing=True`` (the CLI's default, so a refused int8 does not block fp32 / fp16; ``--all-or-nothing``
restores the strict behaviour). The CLI exits 1 when any variant is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from essayscore.encoder import Encoder, Windows, pool_windows
from essayscore.onnx_encoder import INPUT_NAMES, META_FILE, OUTPUT_NAME, VARIANT_FILES, OnnxEncoder, make_session

log = logging.getLogger(__name__)

OPSET = 17
VARIANTS = ("fp32", "fp16", "int8")
# Minimum cosine (PyTorch vs ONNX window embedding, min over windows) per variant. int8's is a sanity floor that
# catches a broken quantisation; its acceptance is the end-to-end QWK check (``band_change``).
DEFAULT_THRESHOLDS = {"fp32": 0.999, "fp16": 0.999, "int8": 0.98}
QWK_TOLERANCE = 0.01
FP16_OP_BLOCK_LIST = ("LayerNormalization", "Softmax", "ReduceSum", "ReduceMean", "ReduceMax", "Pow", "Sqrt", "Exp")
REPORT_FILE = "export_report.json"


class ExportValidationError(RuntimeError):
    """An exported variant does not match PyTorch closely enough (nothing was written). ``report`` has the numbers."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


# --------------------------------------------------------------------------------------------------------
# building the variants
# --------------------------------------------------------------------------------------------------------


def _dummy_windows(encoder: Encoder) -> Windows:
    """Two windows of different lengths, so the traced graph contains the padding-mask path."""
    long_text = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 8)
    return encoder.windows([long_text, "A short essay."])


def export_fp32(encoder: Encoder, path: Path, opset: int = OPSET) -> None:
    """``encoder.module`` -> ONNX with dynamic batch and sequence axes (TorchScript exporter)."""
    import torch

    dummy = _dummy_windows(encoder)
    if dummy.attention_mask.all():
        raise AssertionError("export dummy needs padding")
    module = encoder.module.eval()
    args = (torch.from_numpy(dummy.input_ids).to(encoder.device),
            torch.from_numpy(dummy.attention_mask).to(encoder.device))
    axes = {"batch": 0, "sequence": 1}
    with warnings.catch_warnings(), torch.inference_mode(), _eager_attention(module.model):
        # TracerWarnings on shape checks in transformers' masking code and the "legacy exporter" notice
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes={"input_ids": {v: k for k, v in axes.items()},
                          "attention_mask": {v: k for k, v in axes.items()},
                          OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    import onnx

    onnx.checker.check_model(str(path))


@contextmanager
def _eager_attention(model):
    """Trace the plain MatMul/Softmax attention instead of SDPA. Same numbers, but the SDPA trace carries extra
    IsNaN/Where nodes that defeat ONNX Runtime's graph fusions: on MiniLM (2 cores) the eager graph runs about
    1.4x faster in fp32, and int8 beats PyTorch only with it."""
    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    if previous is None:
        yield
        return
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = previous


def pooling_nodes(model) -> list[str]:
    """Names of the nodes of the mean-pooling head: those outside the backbone's ``/model/`` scope, plus the
    constants only they use. Kept in fp32 by the fp16 conversion (its Casts otherwise get mistyped)."""
    scoped = {n.name for n in model.graph.node if n.name.startswith("/") and not n.name.startswith("/model/")}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.name not in scoped:
            users = [u for o in node.output for u in consumers.get(o, [])]
            if users and all(u in scoped for u in users):
                scoped.add(node.name)
    ops = {n.op_type for n in model.graph.node if n.name in scoped}
    if not {"ReduceSum", "Div"} <= ops:
        raise RuntimeError(f"cannot locate the pooling head in the exported graph (found ops {sorted(ops)})")
    return sorted(scoped)


def convert_fp16(fp32_path: Path, path: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    _materialise_identity_initializers(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "float32 number ... will be truncated" for every tiny weight
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP16_OP_BLOCK_LIST),
            node_block_list=pooling_nodes(model),
        )
    _restore_float_outputs(converted, {o.name for o in model.graph.output
                                       if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT})
    onnx.save(converted, str(path))


def _materialise_identity_initializers(model) -> None:
    """The TorchScript exporter stores identical weights once and aliases the copies with ``Identity`` nodes; the
    fp16 converter then mistypes the alias when its consumer (e.g. a LayerNorm) is block-listed. Give each alias
    its own initializer instead (real checkpoints rarely have identical tensors; a random one has many)."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            copy = numpy_helper.from_array(numpy_helper.to_array(initializers[node.input[0]]), node.output[0])
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)


def _restore_float_outputs(model, names: set[str]) -> None:
    """``keep_io_types`` is not honoured when the node producing an output is block-listed: the converter
    appends a Cast to fp16 behind the (fp32) pooling head. Turn that Cast back into fp32 (a no-op ORT removes)
    or, if the producer is something else, append a Cast to fp32."""
    import onnx

    producers = {o: n for n in model.graph.node for o in n.output}
    for output in model.graph.output:
        if output.name not in names or output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            continue
        node = producers.get(output.name)
        if node is not None and node.op_type == "Cast":
            for attribute in node.attribute:
                if attribute.name == "to":
                    attribute.i = onnx.TensorProto.FLOAT
        else:
            inner = f"{output.name}_fp16"
            for n in model.graph.node:
                n.output[:] = [inner if o == output.name else o for o in n.output]
            model.graph.node.append(onnx.helper.make_node("Cast", [inner], [output.name], to=onnx.TensorProto.FLOAT,
                                                          name=f"{output.name}_to_fp32"))
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def ffn_output_matmuls(model) -> list[str]:
    """The feed-forward output projections (``layer.N/output/dense``, BERT / RoBERTa naming): the MatMuls whose
    input is the GELU output, whose outliers make int8 activations lose the most (measured on MiniLM: excluding
    these 6 of 36 weight MatMuls halves the embedding error and the half bands changed on the test split)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in inits
            and n.name.endswith("/output/dense/MatMul") and "/attention/" not in n.name]


def quantize_int8(fp32_path: Path, path: Path, keep_ffn_output_fp32: bool = True) -> list[str]:
    """Dynamic quantisation (int8 weights per output channel, activations quantised at run time) of the weight
    MatMuls; returns the MatMuls left in fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = ffn_output_matmuls(onnx.load(str(fp32_path), load_external_data=False)) if keep_ffn_output_fp32 else []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "Please consider to run pre-processing before quantization" (no gain here)
    try:
        quantize_dynamic(
            str(fp32_path), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True, reduce_range=False, nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
    return excluded


# --------------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------------


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


def run_graph(path: Path, windows: Windows, batch_size: int = 16, providers: Sequence | None = None) -> np.ndarray:
    """Window embeddings from an ONNX file, batched like :meth:`Encoder.embed_windows`."""
    session = make_session(path, providers)
    if session.get_outputs()[0].type != "tensor(float)":
        raise TypeError(f"{path.name}: output is {session.get_outputs()[0].type}, expected tensor(float)")
    out = np.empty((len(windows), session.get_outputs()[0].shape[-1]), dtype=np.float32)
    order = np.argsort(-windows.n_tokens, kind="stable")
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        width = int(windows.n_tokens[batch].max())
        out[batch] = session.run([OUTPUT_NAME], {"input_ids": windows.input_ids[batch, :width],
                                                 "attention_mask": windows.attention_mask[batch, :width]})[0]
    return out


# --------------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------------


def write_serving_files(encoder: Encoder, directory: Path, model_id: str | None = None) -> list[str]:
    """Tokenizer files, the backbone config (no weights) and ``onnx_encoder.json``: what OnnxEncoder needs."""
    from transformers import AutoConfig

    before = set(os.listdir(directory))
    encoder.tokenizer.save_pretrained(str(directory))
    AutoConfig.from_pretrained(str(encoder.folder), local_files_only=True).save_pretrained(str(directory))
    meta = {"name": encoder.name, "model_id": model_id or encoder.model_id, "window": encoder.window,
            "stride": encoder.stride, "dim": encoder.dim, "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME,
            "opset": OPSET, "variants": {}}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return sorted(set(os.listdir(directory)) - before)


def export_encoder(
    encoder: Encoder,
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
    with ``encoder.module``'s. A variant passes when its min cosine >= ``thresholds[variant]`` and its output is
    finite. ``extra_checks[variant](temp_onnx_path)`` runs after that (e.g. the end-to-end band check) and must
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
                       "providers": ["CPUExecutionProvider"]},
        "timings_s": {"torch_reference": round(time.perf_counter() - t0, 3)},
        "variants": {},
        **(report_extra or {}),
    }
    staging = Path(tempfile.mkdtemp(prefix=".export-tmp-", dir=out_dir))
    try:
        paths = {v: staging / VARIANT_FILES[v] for v in VARIANTS}
        build = {"fp32": lambda: export_fp32(encoder, paths["fp32"]),
                 "fp16": lambda: convert_fp16(paths["fp32"], paths["fp16"]),
                 "int8": lambda: quantize_int8(paths["fp32"], paths["int8"])}
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
            t0 = time.perf_counter()
            try:
                candidate = run_graph(paths[variant], windows, batch_size)
            except Exception as exc:  # e.g. an execution provider without kernels for the graph's types
                entry.update(passed=False, error=f"{type(exc).__name__}: {exc}")
                failures.append(f"{variant}: cannot run ({entry['error'][:200]})")
                report["variants"][variant] = entry
                continue
            entry["validate_s"] = round(time.perf_counter() - t0, 3)
            entry.update(compare(reference, candidate, windows, len(texts)))
            entry["threshold"] = limits[variant]
            entry["passed"] = bool(entry["finite"] and entry["cosine_min"] >= limits[variant])
            if not entry["passed"]:
                failures.append(f"{variant}: min cosine {entry['cosine_min']:.6f} < {limits[variant]} "
                                f"(max abs diff {entry['max_abs_diff']:.3g}, finite={entry['finite']})")
            elif extra_checks and variant in extra_checks:
                t0 = time.perf_counter()
                check = extra_checks[variant](paths[variant])
                check["seconds"] = round(time.perf_counter() - t0, 3)
                entry["band_check"] = check
                if not check.get("passed", False):
                    entry["passed"] = False
                    failures.append(f"{variant}: end-to-end check failed ({check.get('reason', check)})")
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
        from essayscore.features import FeatureExtractor
        from essayscore.pipeline import EssayScorer

        self.artifact_dir = Path(artifact_dir)
        self.essays, self.prompts = list(essays), list(prompts)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float64)
        from essayscore.pipeline import load_error_detector

        self.extractor = _MemoExtractor(FeatureExtractor(error_detector=load_error_detector(self.artifact_dir)))
        t0 = time.perf_counter()
        self.torch_scorer = EssayScorer(self.artifact_dir, extractor=self.extractor)
        self.torch_raw, self.torch_band = self._score(self.torch_scorer)
        self.torch_seconds = time.perf_counter() - t0
        self.encoder_config = self.torch_scorer.config["encoder"]

    def _score(self, scorer) -> tuple[np.ndarray, np.ndarray]:
        scored = scorer.score(self.essays, self.prompts)
        return (np.array([s.result["ielts_raw"] for s in scored]), np.array([s.result["ielts_band"] for s in scored]))

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
        from essayscore.pipeline import EssayScorer

        t0 = time.perf_counter()
        scorer = EssayScorer(self.artifact_dir, encoder=self.onnx_encoder(onnx_path, **encoder_kwargs),
                             extractor=self.extractor)
        raw, band = self._score(scorer)
        result = {
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


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------


def load_split(artifact_dir: Path, split: str):
    """The artifact's IELTS essays of one split (the rows with a band to check QWK on; data re-loaded and
    checked against ``splits.csv``)."""
    from training.sources import load_artifact_data

    essays, splits = load_artifact_data(artifact_dir)
    keep = (splits["split"].to_numpy() == split) & (essays["source"].to_numpy() == "ielts")
    return essays[keep].reset_index(drop=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="latest", help="artifact: latest, a version, a folder or a BentoML tag")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--n-validation", type=int, default=24, help="test-split essays for the cosine check")
    parser.add_argument("--band-split", default="test", help="split scored for the band change (QWK needs labels)")
    parser.add_argument("--band-limit", type=int, default=0, help="score only the first N essays of that split")
    parser.add_argument("--band-variants", nargs="*", default=list(VARIANTS), choices=VARIANTS,
                        help="variants that get the end-to-end band check (int8's acceptance)")
    parser.add_argument("--qwk-tolerance", type=float, default=QWK_TOLERANCE)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--all-or-nothing", action="store_true",
                        help="write nothing if any variant is refused (default: write the ones that pass)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from essayscore import artifacts
    from essayscore.settings import get_settings

    artifact_dir = artifacts.resolve(args.model, get_settings().artifacts_dir)
    artifacts.verify(artifact_dir)
    enc_cfg = json.loads((artifact_dir / "config.json").read_text())["encoder"]
    encoder = Encoder(enc_cfg["name"], window=enc_cfg["window"], stride=enc_cfg["stride"], batch_size=args.batch_size)
    if encoder.model_id != enc_cfg["model_id"]:
        raise artifacts.ArtifactError(f"artifact encoder {enc_cfg['model_id']!r} != local {encoder.model_id!r}")

    rows = load_split(artifact_dir, args.band_split)
    validation = rows.sample(n=min(args.n_validation, len(rows)), random_state=0)["essay"].tolist()
    band_rows = rows.head(args.band_limit) if args.band_limit > 0 else rows
    comparer = None
    checks = {}
    if args.band_variants:
        print(f"scoring {len(band_rows)} {args.band_split} essays with the PyTorch encoder ...", flush=True)
        comparer = BandComparer(artifact_dir, band_rows["essay"].tolist(), band_rows["prompt"].tolist(),
                                band_rows["band"].to_numpy())
        checks = {v: (lambda path, v=v: comparer.compare(path, args.qwk_tolerance)) for v in args.band_variants}

    extra = {"artifact": str(artifact_dir), "artifact_version": artifact_dir.name,
             "band_check": {"split": args.band_split, "n_essays": len(band_rows), "qwk_tolerance": args.qwk_tolerance,
                            "variants": list(args.band_variants)}}
    try:
        report = export_encoder(encoder, args.out, args.variants, validation, batch_size=args.batch_size,
                                extra_checks=checks, report_extra=extra, keep_passing=not args.all_or_nothing)
    except ExportValidationError as exc:
        print(json.dumps(exc.report, indent=2), file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    print(f"wrote {', '.join(report['files'])} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
