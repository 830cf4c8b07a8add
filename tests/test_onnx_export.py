"""ONNX export of the encoder: real MiniLM and a real tiny random RoBERTa, validated against PyTorch on real essays."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import training.onnx_export.graph as export_onnx
from essayscore.onnx_encoder import META_FILE, VARIANT_FILES, OnnxEncoder, make_session
from essayscore.torch_encoder import TorchEncoder
from training.onnx_export import ExportValidationError, cosine_rows, export_encoder

try:
    from tiny_roberta import build_tiny_roberta, training_texts
except ImportError:  # tests/ imported as a package
    from tests.tiny_roberta import build_tiny_roberta, training_texts

pytestmark = pytest.mark.slow  # every test exports a graph to ONNX (one also scores with the trained artifact)


@pytest.fixture(scope="module")
def essays() -> list[str]:
    """Real essays from the shared data, longest first (the first ones need several 256-token windows)."""
    return sorted(training_texts(120), key=len, reverse=True)


@pytest.fixture(scope="module")
def validation_texts(essays) -> list[str]:
    return essays[:3] + essays[60:63]  # long (multi-window) and typical essays


def _no_staging_left(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".export-tmp-")]


# ---------------------------------------------------------------------------------------------------------
# MiniLM
# ---------------------------------------------------------------------------------------------------------


def test_minilm_variants_pass_validation(minilm_export, minilm):
    out, report = minilm_export
    variants = report["variants"]
    assert set(variants) == {"fp32", "fp16", "int8"}
    assert variants["fp32"]["cosine_min"] >= 0.999 and variants["fp32"]["max_abs_diff"] < 1e-3
    assert variants["fp16"]["cosine_min"] >= 0.999  # run on the CPU execution provider
    assert variants["int8"]["cosine_min"] >= 0.98
    print("int8 window cosine min / mean:", variants["int8"]["cosine_min"], variants["int8"]["cosine_mean"])
    assert report["validation"]["n_windows"] > report["validation"]["n_texts"]  # multi-window essays included
    for name in [*VARIANT_FILES.values(), META_FILE, "export_report.json", "tokenizer.json", "config.json"]:
        assert (out / name).is_file(), name
    assert _no_staging_left(out)

    fp32 = onnx.load(str(out / "encoder.fp32.onnx"))
    assert [i.name for i in fp32.graph.input] == ["input_ids", "attention_mask"]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in fp32.graph.input)
    assert [o.name for o in fp32.graph.output] == ["embedding"]
    assert max(op.version for op in fp32.opset_import if op.domain in ("", "ai.onnx")) >= 17

    fp16 = onnx.load(str(out / "encoder.fp16.onnx"))  # fp32 at the edges, fp16 inside, LayerNorm/Softmax in fp32
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    int8 = onnx.load(str(out / "encoder.int8.onnx"))
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in int8.graph.node)


@pytest.mark.parametrize("batch,length", [(1, 17), (3, 17), (1, 256), (3, 256)])
def test_dynamic_axes(minilm_export, minilm, essays, batch, length):
    session = make_session(minilm_export[0] / "encoder.fp32.onnx")
    w = minilm.windows(essays[:3])
    ids = w.input_ids[:batch, :length].copy()
    mask = w.attention_mask[:batch, :length].copy()
    if batch > 1:  # a right-padded row inside the batch
        mask[1, length // 2 :] = 0
        ids[1, length // 2 :] = minilm.pad_id
    (got,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    with torch.inference_mode():
        want = minilm.module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert got.shape == (batch, minilm.dim) and got.dtype == np.float32
    assert cosine_rows(want, got).min() >= 0.9999
    assert np.abs(want - got).max() < 1e-3


def test_onnx_encoder_matches_torch_encoder_on_long_essays(minilm_export, minilm, essays):
    out, _ = minilm_export
    long_essays = essays[:4]
    assert all(len(minilm.windows([e])) > 1 for e in long_essays)
    want = minilm.encode(long_essays)
    fp32 = OnnxEncoder.from_dir(out, "fp32", intra_op_threads=2)
    assert fp32.model_id == minilm.model_id and fp32.dim == minilm.dim
    w_onnx, w_torch = fp32.windows(long_essays), minilm.windows(long_essays)
    assert np.array_equal(w_onnx.input_ids, w_torch.input_ids) and np.array_equal(w_onnx.owner, w_torch.owner)
    assert cosine_rows(want, fp32.encode(long_essays)).min() >= 0.999
    int8 = OnnxEncoder.from_dir(out, "int8")
    assert cosine_rows(want, int8.encode(long_essays)).min() >= 0.98
    assert fp32.run_windows(w_torch.input_ids[:2], w_torch.attention_mask[:2]).shape == (2, minilm.dim)
    assert fp32.encode([]).shape == (0, minilm.dim)


def test_onnx_encoder_from_artifact_encoder_config(minilm_export, minilm, essays):
    """The artifact's config["encoder"] (name / window / stride / model_id) is enough to build the runtime."""
    config = {"name": "minilm", "model_id": minilm.model_id, "window": 256, "stride": 192, "dim": minilm.dim}
    enc = OnnxEncoder(minilm_export[0] / "encoder.fp32.onnx", config)
    assert enc.model_id == minilm.model_id
    assert cosine_rows(minilm.encode(essays[5:7]), enc.encode(essays[5:7])).min() >= 0.999


def test_embedded_runtime_serves_the_onnx_export(minilm_export, trained_artifact, tmp_path):
    """settings.onnx_encoder_dir: the embedded runtime runs the export (fp32: same results as PyTorch; int8:
    the same stages, a different backend) and refuses an export of another encoder."""
    from essayscore.runtimes import Item
    from essayscore.runtimes.embedded import EmbeddedRuntime

    items = [Item("Cities should invest in public transport rather than roads. " * 25, "Transport in cities"),
             Item("Online learning helps students who live far from schools. " * 20)]
    torch_rt = EmbeddedRuntime(trained_artifact)
    fp32_rt = EmbeddedRuntime(trained_artifact, onnx_encoder_dir=minilm_export[0], onnx_variant="fp32")
    int8_rt = EmbeddedRuntime(trained_artifact, onnx_encoder_dir=minilm_export[0], onnx_variant="int8")
    assert (torch_rt.encoder_backend, fp32_rt.encoder_backend, int8_rt.encoder_backend) == (
        "torch-fp32", "onnx-fp32", "onnx-int8")
    assert isinstance(int8_rt.scorer.encoder, OnnxEncoder)
    want, got = torch_rt.score(items), fp32_rt.score(items)
    for a, b in zip(want.results, got.results):
        assert b.ielts_raw == pytest.approx(a.ielts_raw, abs=1e-3)
    assert {"tokenise_ms", "encoder_ms"} <= set(int8_rt.score(items).timings_ms)

    other = tmp_path / "other-export"
    shutil.copytree(minilm_export[0], other)
    meta = json.loads((other / META_FILE).read_text())
    (other / META_FILE).write_text(json.dumps({**meta, "model_id": meta["model_id"] + "-other"}))
    from essayscore.artifacts import ArtifactError

    with pytest.raises(ArtifactError, match="trained with encoder"):
        EmbeddedRuntime(trained_artifact, onnx_encoder_dir=other, onnx_variant="fp32")


# ---------------------------------------------------------------------------------------------------------
# refused exports leave nothing behind
# ---------------------------------------------------------------------------------------------------------


def test_impossible_threshold_is_refused_and_writes_nothing(minilm, validation_texts, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(ExportValidationError) as info:
        export_encoder(minilm, out, variants=("fp32",), validation_texts=validation_texts[:2],
                       thresholds={"fp32": 1.1})
    assert info.value.report["variants"]["fp32"]["passed"] is False
    assert list(out.iterdir()) == []


def test_perturbed_graph_is_refused_and_writes_nothing(minilm, validation_texts, tmp_path, monkeypatch):
    """A graph whose output is shifted by a random vector (a real export bug would look like this) fails the
    default cosine threshold; none of the variants (nor the tokenizer files) reach the output folder."""
    real_export = export_onnx.export_fp32

    def perturbed_export(encoder, path, opset=export_onnx.OPSET):
        real_export(encoder, path, opset)
        model = onnx.load(str(path))
        out = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
        bias = np.random.default_rng(0).normal(0, 0.5, size=(encoder.dim,)).astype(np.float32)
        model.graph.initializer.append(onnx.numpy_helper.from_array(bias, "perturbation"))
        model.graph.node.append(onnx.helper.make_node("Add", [f"{out}_raw", "perturbation"], [out]))
        onnx.save(model, str(path))

    monkeypatch.setattr(export_onnx, "export_fp32", perturbed_export)
    out = tmp_path / "perturbed"
    with pytest.raises(ExportValidationError, match="fp32"):
        export_encoder(minilm, out, variants=("fp32", "int8"), validation_texts=validation_texts[:2])
    assert list(out.iterdir()) == []


def test_keep_passing_writes_only_the_variants_that_pass(minilm, validation_texts, tmp_path):
    out = tmp_path / "partial"
    with pytest.raises(ExportValidationError, match="int8"):
        export_encoder(minilm, out, variants=("fp32", "int8"), validation_texts=validation_texts[:1],
                       thresholds={"int8": 1.1}, keep_passing=True)
    assert (out / "encoder.fp32.onnx").is_file() and not (out / "encoder.int8.onnx").exists()
    assert _no_staging_left(out)
    assert OnnxEncoder.from_dir(out, "fp32").model_id == minilm.model_id


# ---------------------------------------------------------------------------------------------------------
# RoBERTa path (no token_type_ids, <s> ... </s>, offset positions)
# ---------------------------------------------------------------------------------------------------------


def test_tiny_roberta_exports_without_token_type_ids(tmp_path, essays):
    folder = build_tiny_roberta(tmp_path / "tiny-roberta")
    roberta = TorchEncoder(folder, window=64, stride=48, batch_size=8)
    assert not roberta.module.uses_token_types
    out = tmp_path / "roberta-onnx"
    texts = essays[:2] + essays[80:82]
    report = export_encoder(roberta, out, variants=("fp32", "fp16"), validation_texts=texts)
    assert report["variants"]["fp32"]["cosine_min"] >= 0.999
    assert report["variants"]["fp16"]["cosine_min"] >= 0.999
    assert report["validation"]["n_windows"] > len(texts)
    for name in ("encoder.fp32.onnx", "encoder.fp16.onnx"):
        graph = onnx.load(str(out / name)).graph
        assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]  # no token_type_ids
    assert not (out / "encoder.int8.onnx").exists()
    enc = OnnxEncoder.from_dir(out, "fp32")
    assert enc.model_id == roberta.model_id
    assert cosine_rows(roberta.encode(texts), enc.encode(texts)).min() >= 0.999
