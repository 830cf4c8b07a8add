"""Export the frozen encoder (``MeanPooledEncoder``: backbone + masked mean pooling) to ONNX, validate, ship.

    python -m training.onnx_export --model latest --out exports/latest-onnx [--variants fp32 fp16 int8]

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
  weights; the feed-forward output projections stay fp32, see :func:`ffn_output_matmuls`) for CPU serving. Its
  cosine is lower by design; the CLI accepts it only if the artifact's test-split QWK moves by at most
  ``--qwk-tolerance`` when the ONNX encoder replaces the PyTorch one in ``EssayScorer``.

Every variant is written to a temporary folder inside ``out``, validated against PyTorch on real essays
(windowed exactly as :meth:`Encoder.windows` does and batched as ``OnnxEncoder`` serves them: the int8 graph
encodes each essay's windows alone) and moved into place only if it passes. A refused variant is
never written and :class:`ExportValidationError` is raised; ``export_encoder`` then writes nothing at all unless
``keep_passing=True`` (the CLI's default, so a refused int8 does not block fp32 / fp16; ``--all-or-nothing``
restores the strict behaviour). The CLI exits 1 when any variant is refused.

Modules: :mod:`~training.onnx_export.graph` (export, fp16 conversion, int8 quantisation),
:mod:`~training.onnx_export.validate` (tolerances, ``ExportValidationError``, ``BandComparer``),
:mod:`~training.onnx_export.data` (validation essays), :mod:`~training.onnx_export.pipeline` (``export_encoder``)
and :mod:`~training.onnx_export.cli` (``main``).
"""

from training.onnx_export.cli import main
from training.onnx_export.data import load_split, validation_sample
from training.onnx_export.graph import (
    FP16_OP_BLOCK_LIST,
    OPSET,
    VARIANTS,
    convert_fp16,
    export_fp32,
    ffn_output_matmuls,
    pooling_nodes,
    quantize_int8,
)
from training.onnx_export.pipeline import export_encoder, write_serving_files
from training.onnx_export.validate import (
    DEFAULT_THRESHOLDS,
    QWK_TOLERANCE,
    REPORT_FILE,
    BandComparer,
    ExportValidationError,
    band_change,
    compare,
    cosine_rows,
    run_graph,
    validate_variant,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FP16_OP_BLOCK_LIST",
    "OPSET",
    "QWK_TOLERANCE",
    "REPORT_FILE",
    "VARIANTS",
    "BandComparer",
    "ExportValidationError",
    "band_change",
    "compare",
    "convert_fp16",
    "cosine_rows",
    "export_encoder",
    "export_fp32",
    "ffn_output_matmuls",
    "load_split",
    "main",
    "pooling_nodes",
    "quantize_int8",
    "run_graph",
    "validate_variant",
    "validation_sample",
    "write_serving_files",
]
