"""Building the ONNX variants of the encoder: the TorchScript export of ``MeanPooledEncoder`` (fp32), the fp16
conversion (with the graph surgery it needs: aliased initializers, fp32 pooling head and outputs) and int8
dynamic quantisation. Nothing here validates; see :mod:`training.onnx_export.validate`.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

from essayscore.onnx_encoder import INPUT_NAMES, OUTPUT_NAME
from essayscore.torch_encoder import TorchEncoder
from essayscore.windows import Windows

OPSET = 17
VARIANTS = ("fp32", "fp16", "int8")
FP16_OP_BLOCK_LIST = ("LayerNormalization", "Softmax", "ReduceSum", "ReduceMean", "ReduceMax", "Pow", "Sqrt", "Exp")


def _dummy_windows(encoder: TorchEncoder) -> Windows:
    """Two windows of different lengths, so the traced graph contains the padding-mask path."""
    long_text = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 8)
    return encoder.windows([long_text, "A short essay."])


def export_fp32(encoder: TorchEncoder, path: Path, opset: int = OPSET) -> None:
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

