"""Generate the Triton model repository of one artifact version.

    python -m training.build_repository --model latest --profile cpu --out model_repository

The graph is the same in both profiles; only the backends of ``encoder`` and the tree model differ:

=================  =====================================  ===========================================
model              cpu profile                            gpu profile
=================  =====================================  ===========================================
preprocess         python (features + error detector,     same
                   grammar, windows)
encoder            python: ONNX Runtime, fp32 (or int8)   onnxruntime backend, fp16 ONNX, KIND_GPU
assemble           python (pool, cosine, preprocessor)    same
band_regressor     python: tl2cgen-compiled .so           fil (xgboost_json, regressor), KIND_GPU
postprocess        python (ScoringModel.finish)           same
essay_scorer       ensemble of the five                   same
=================  =====================================  ===========================================

``band_regressor`` serves the residual trees; ``postprocess`` reads their output and FEATURE_VECTOR (the linear
part and the length terms of the latent scale need the model input row), and computes the band distribution,
CEFR probabilities and interval with ``ScoringModel.finish``, as in-process scoring does.

What it does: verifies the artifact (an artifact without residual trees is refused: there is nothing for
``band_regressor`` to serve); exports the encoder with ``training.export_onnx`` (validated against PyTorch;
skipped when the repository already holds a validated export of the same encoder and variant); compiles the
residual trees with ``compile_xgboost`` (cpu) or copies their XGBoost JSON (gpu); copies what each python model
needs into its version folder (the artifact's ``error_detector.npz``, when it has one, into preprocess's: the
extractor needs it for the ``learned_errors`` features); writes every ``config.pbtxt`` from the typed
descriptions below (serialised through Triton's own protobuf schema,
``tritonclient.grpc.model_config_pb2.ModelConfig``); checks the whole repository with :func:`check_repository`
(configs parse, files exist, every ensemble mapping names a real tensor of the step model with the same dtype and
a compatible shape); writes ``repository.json`` (artifact version, profile, encoder, sha256 of every file). The
repository is built in a temporary sibling folder and swapped in at the end, so a failed build leaves the old
one untouched.

Tensor names, dtypes and shapes come from :mod:`essayscore.triton_io`; the python models' code from
:mod:`essayscore.triton_models`.
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Mapping, Sequence

from essayscore import triton_io as io

log = logging.getLogger(__name__)

Profile = Literal["cpu", "gpu"]
PROFILES: tuple[str, ...] = ("cpu", "gpu")
REPOSITORY_FILE = "repository.json"
VERSION = "1"
MODEL_CODE_DIR = Path(__file__).resolve().parent.parent / "essayscore" / "triton_models"
ARTIFACT_SUBDIR = "artifact"  # copied artifact files inside a python model's version folder
TOKENIZER_SUBDIR = "encoder"  # tokenizer + onnx_encoder.json inside preprocess's version folder
FIL_MODEL_FILE = "xgboost.json"  # the FIL backend's default file name for model_type xgboost_json
TREE_LIBRARY = "regressor"  # band_regressor's compiled library: regressor.so (cpu profile)
TREE_MAX_BATCH = 64  # the tree model batches dynamically (FIL requires max_batch_size > 0)
CPU_VARIANTS = ("fp32", "int8")
# ONNX int8 serves the cpu profile: the fastest single-essay encoder here at the same test QWK (its export is
# refused if QWK moves by more than 0.01); see docs/benchmarks.md and the export report.
DEFAULT_CPU_VARIANT = "int8"
GPU_VARIANT = "fp16"


class RepositoryError(RuntimeError):
    """The generated (or given) repository is inconsistent; ``problems`` lists every finding."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("model repository check failed:\n  - " + "\n  - ".join(self.problems))


# ================================================================================================================
# typed descriptions -> ModelConfig protobuf
# ================================================================================================================
@dataclass(frozen=True)
class ModelSpec:
    """One non-ensemble model: everything its config.pbtxt says."""

    name: str
    backend: str  # "python", "onnxruntime", "fil"
    inputs: tuple[io.TensorSpec, ...]
    outputs: tuple[io.TensorSpec, ...]
    max_batch_size: int = 0
    kind: str = "KIND_CPU"
    count: int = 1
    parameters: Mapping[str, str] = field(default_factory=dict)
    dynamic_batching: bool = False
    max_queue_delay_us: int = 0
    default_model_filename: str = ""


@dataclass(frozen=True)
class StepSpec:
    model: str
    input_map: Mapping[str, str]  # model input name -> ensemble tensor
    output_map: Mapping[str, str]  # model output name -> ensemble tensor


@dataclass(frozen=True)
class EnsembleSpec:
    name: str
    inputs: tuple[io.TensorSpec, ...]
    outputs: tuple[io.TensorSpec, ...]
    steps: tuple[StepSpec, ...]
    max_batch_size: int = 0


def _add_tensor(message, spec: io.TensorSpec) -> None:
    message.name = spec.name
    message.data_type = _pb().DataType.Value(spec.config_dtype)
    message.dims.extend(int(d) for d in spec.dims)
    if spec.optional and hasattr(message, "optional"):
        message.optional = True


def _pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def to_config(spec: ModelSpec | EnsembleSpec):
    """A typed description -> ``ModelConfig`` message (the schema rejects anything it does not know)."""
    pb = _pb()
    config = pb.ModelConfig(name=spec.name, max_batch_size=int(spec.max_batch_size))
    for tensor in spec.inputs:
        _add_tensor(config.input.add(), tensor)
    for tensor in spec.outputs:
        _add_tensor(config.output.add(), tensor)
    if isinstance(spec, EnsembleSpec):
        config.platform = "ensemble"
        for step in spec.steps:
            s = config.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
            for key, value in step.input_map.items():
                s.input_map[key] = value
            for key, value in step.output_map.items():
                s.output_map[key] = value
        return config
    config.backend = spec.backend
    group = config.instance_group.add(count=int(spec.count))
    group.kind = pb.ModelInstanceGroup.Kind.Value(spec.kind)
    if spec.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = int(spec.max_queue_delay_us)
    if spec.default_model_filename:
        config.default_model_filename = spec.default_model_filename
    for key, value in spec.parameters.items():
        config.parameters[key].string_value = str(value)
    return config


def config_text(spec: ModelSpec | EnsembleSpec) -> str:
    from google.protobuf import text_format

    header = "# generated by training.build_repository from typed descriptions; do not edit by hand\n"
    return header + text_format.MessageToString(to_config(spec))


def parse_config(path: Path):
    """``config.pbtxt`` -> ``ModelConfig`` (raises ``google.protobuf.text_format.ParseError`` on schema errors)."""
    from google.protobuf import text_format

    return text_format.Parse(Path(path).read_text(), _pb().ModelConfig())


# ================================================================================================================
# the graph
# ================================================================================================================
@dataclass(frozen=True)
class GraphSizes:
    n_features: int  # handcrafted features (FEATURES registry order)
    embedding_dim: int
    n_model_features: int  # the trees' input width (ScoringModel.feature_names)

    def mapping(self) -> dict[str, int]:
        return {"n_features": self.n_features, "embedding_dim": self.embedding_dim,
                "n_model_features": self.n_model_features}


@dataclass(frozen=True)
class EncoderGraph:
    """Tensor names of the exported ONNX graph (the encoder model keeps them in both profiles)."""

    input_names: tuple[str, str] = ("input_ids", "attention_mask")
    output_name: str = "embedding"
    output_dtype: str = "FP32"  # "FP16" when the fp16 export's output is half precision (then EMBEDDING is too)


def model_specs(profile: Profile, sizes: GraphSizes, artifact_version: str, encoder_graph: EncoderGraph,
                onnx_file: str, intra_op_threads: int = 0, error_detector: str | None = None) -> list[ModelSpec]:
    """``error_detector``: the detector file relative to preprocess's version folder (None: the artifact has none)."""
    dims = sizes.mapping()

    def r(specs: Sequence[io.TensorSpec]) -> tuple[io.TensorSpec, ...]:
        return tuple(s.resolved(dims) for s in specs)

    gpu = profile == "gpu"
    ids_name, mask_name = encoder_graph.input_names
    encoder_inputs = (io.TensorSpec(ids_name, "INT64", (-1, -1)), io.TensorSpec(mask_name, "INT64", (-1, -1)))
    encoder_outputs = (io.TensorSpec(encoder_graph.output_name, encoder_graph.output_dtype, (-1, sizes.embedding_dim)),)
    # EMBEDDING carries the graph's output dtype to assemble (which pools in float64 whatever it gets)
    assemble_inputs = tuple(io.TensorSpec(t.name, encoder_graph.output_dtype, t.dims) if t.name == io.EMBEDDING.name
                            else t for t in io.ASSEMBLE_INPUTS)
    if gpu:
        encoder = ModelSpec(io.ENCODER, "onnxruntime", encoder_inputs, encoder_outputs, kind="KIND_GPU",
                            default_model_filename=onnx_file)
    else:
        encoder = ModelSpec(io.ENCODER, "python", encoder_inputs, encoder_outputs,
                            parameters={"onnx_file": onnx_file, "encoder_dir": ".",
                                        "intra_op_threads": str(intra_op_threads)})

    tree_io = r([io.TREE_INPUT]), r([io.BAND_OUTPUT])
    if gpu:
        params = {"model_type": "xgboost_json", "output_class": "false", "predict_proba": "false",
                  "storage_type": "AUTO", "xgboost_allow_unknown_field": "true"}
        trees = ModelSpec(io.BAND_REGRESSOR, "fil", *tree_io, max_batch_size=TREE_MAX_BATCH, kind="KIND_GPU",
                          parameters=params, dynamic_batching=True, default_model_filename=FIL_MODEL_FILE)
    else:
        trees = ModelSpec(io.BAND_REGRESSOR, "python", *tree_io, max_batch_size=TREE_MAX_BATCH,
                          dynamic_batching=True, parameters={"library": f"{TREE_LIBRARY}.so"})
    preprocess_params = {"encoder_dir": TOKENIZER_SUBDIR}
    if error_detector is not None:
        preprocess_params["error_detector"] = error_detector

    return [
        ModelSpec(io.PREPROCESS, "python", r(io.PREPROCESS_INPUTS), r(io.PREPROCESS_OUTPUTS),
                  parameters=preprocess_params),
        encoder,
        ModelSpec(io.ASSEMBLE, "python", r(assemble_inputs), r(io.ASSEMBLE_OUTPUTS),
                  parameters={"artifact_dir": ARTIFACT_SUBDIR}),
        trees,
        ModelSpec(io.POSTPROCESS, "python", r(io.POSTPROCESS_INPUTS), r(io.POSTPROCESS_OUTPUTS),
                  parameters={"artifact_dir": ARTIFACT_SUBDIR, "artifact_version": artifact_version}),
    ]


def ensemble_spec(sizes: GraphSizes, encoder_graph: EncoderGraph) -> EnsembleSpec:
    same = lambda specs: {s.name: s.name for s in specs}  # noqa: E731 - step tensor name == ensemble tensor name
    ids_name, mask_name = encoder_graph.input_names
    steps = (
        StepSpec(io.PREPROCESS, same(io.PREPROCESS_INPUTS), same(io.PREPROCESS_OUTPUTS)),
        StepSpec(io.ENCODER, {ids_name: io.INPUT_IDS.name, mask_name: io.ATTENTION_MASK.name},
                 {encoder_graph.output_name: io.EMBEDDING.name}),
        StepSpec(io.ASSEMBLE, same(io.ASSEMBLE_INPUTS), same(io.ASSEMBLE_OUTPUTS)),
        StepSpec(io.BAND_REGRESSOR, {io.TREE_INPUT.name: io.FEATURE_VECTOR.name},
                 {io.BAND_OUTPUT.name: io.RAW_BAND.name}),
        # FEATURE_VECTOR feeds band_regressor and postprocess (and is an ensemble output)
        StepSpec(io.POSTPROCESS, same(io.POSTPROCESS_INPUTS), same(io.POSTPROCESS_OUTPUTS)),
    )
    dims = sizes.mapping()
    return EnsembleSpec(io.ENSEMBLE, tuple(s.resolved(dims) for s in io.ENSEMBLE_INPUTS),
                        tuple(s.resolved(dims) for s in io.ENSEMBLE_OUTPUTS), steps)


# ================================================================================================================
# the checker (used by the generator, the tests and ``--check``)
# ================================================================================================================
def _full_shape(config, tensor) -> tuple[int, ...]:
    dims = tuple(int(d) for d in tensor.dims)
    return ((-1,) + dims) if config.max_batch_size > 0 else dims


def _shapes_compatible(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def _dtype_name(value: int) -> str:
    return _pb().DataType.Name(value)


def load_configs(repository: Path) -> tuple[dict, list[str]]:
    """Every ``<model>/config.pbtxt`` parsed with Triton's schema -> ({name: ModelConfig}, problems)."""
    from google.protobuf import text_format

    configs, problems = {}, []
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = parse_config(path)
        except text_format.ParseError as exc:
            problems.append(f"{path.parent.name}/config.pbtxt does not parse as ModelConfig: {exc}")
            continue
        if config.name and config.name != path.parent.name:
            problems.append(f"{path.parent.name}/config.pbtxt names the model {config.name!r}")
        configs[path.parent.name] = config
    if not configs:
        problems.append(f"{repository}: no */config.pbtxt")
    return configs, problems


def check_model(repository: Path, name: str, config, profile: str | None = None) -> list[str]:
    """Per-model checks: backend, dtypes, instance kinds, batching and the files its backend loads."""
    problems: list[str] = []
    where = f"{name}:"
    version_dir = Path(repository) / name / VERSION
    for tensor in list(config.input) + list(config.output):
        if tensor.data_type == _pb().DataType.Value("TYPE_INVALID"):
            problems.append(f"{where} tensor {tensor.name!r} has no data_type")
        if not tensor.dims and config.platform != "ensemble":
            problems.append(f"{where} tensor {tensor.name!r} has no dims")
    names = [t.name for t in config.input] + [t.name for t in config.output]
    if len(set(names)) != len(names) and config.backend != "fil":
        problems.append(f"{where} duplicate tensor names {sorted(names)}")
    if config.platform == "ensemble":
        return problems
    if not config.backend:
        problems.append(f"{where} neither backend nor platform is set")
        return problems
    kinds = {_pb().ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group}
    if profile == "cpu" and "KIND_GPU" in kinds:
        problems.append(f"{where} KIND_GPU instances in the cpu profile")
    if profile == "gpu" and config.backend in ("onnxruntime", "fil") and kinds != {"KIND_GPU"}:
        problems.append(f"{where} {config.backend} model should run KIND_GPU in the gpu profile, has {sorted(kinds)}")
    if not version_dir.is_dir():
        problems.append(f"{where} version folder {VERSION}/ is missing")
        return problems
    if config.backend == "python":
        if not (version_dir / "model.py").is_file():
            problems.append(f"{where} {VERSION}/model.py is missing")
        for key, value in config.parameters.items():
            if key in ("encoder_dir", "artifact_dir", "onnx_file", "library", "error_detector") and \
                    not (version_dir / value.string_value).exists():
                problems.append(f"{where} parameter {key} = {value.string_value!r} does not exist in {VERSION}/")
    elif config.backend == "onnxruntime":
        model_file = version_dir / (config.default_model_filename or "model.onnx")
        if not model_file.is_file():
            problems.append(f"{where} ONNX file {model_file.name} is missing")
    elif config.backend == "fil":
        params = {k: v.string_value for k, v in config.parameters.items()}
        model_file = version_dir / (config.default_model_filename or FIL_MODEL_FILE)
        if not model_file.is_file():
            problems.append(f"{where} FIL model file {model_file.name} is missing")
        if params.get("model_type") not in ("xgboost", "xgboost_json", "xgboost_ubj", "lightgbm", "treelite_checkpoint"):
            problems.append(f"{where} FIL model_type {params.get('model_type')!r} is not a FIL model type")
        if params.get("output_class") not in ("true", "false"):
            problems.append(f"{where} FIL output_class must be 'true' or 'false', got {params.get('output_class')!r}")
        if config.max_batch_size <= 0:
            problems.append(f"{where} FIL needs max_batch_size > 0")
        if [t.name for t in config.input] != ["input__0"] or "output__0" not in [t.name for t in config.output]:
            problems.append(f"{where} FIL tensors must be input__0 / output__0")
        for tensor in list(config.input) + list(config.output):
            if _dtype_name(tensor.data_type) != "TYPE_FP32":
                problems.append(f"{where} FIL tensor {tensor.name!r} must be TYPE_FP32")
    else:
        problems.append(f"{where} unexpected backend {config.backend!r}")
    return problems


def check_ensemble(configs: Mapping[str, object], name: str = io.ENSEMBLE) -> list[str]:
    """Cross-step checks: every input_map / output_map key exists in the step model's config with the dtype and
    (batch-aware) shape of the ensemble tensor it connects; every tensor consumed is produced exactly once (or is
    an ensemble input); every ensemble output is produced; required step inputs are fed; no cycles."""
    problems: list[str] = []
    ensemble = configs.get(name)
    if ensemble is None:
        return [f"no ensemble {name!r} in the repository"]
    if ensemble.platform != "ensemble":
        return [f"{name}: platform is {ensemble.platform!r}, not 'ensemble'"]
    # ensemble tensor -> (dtype, full shape, producer)
    tensors: dict[str, tuple[int, tuple[int, ...], str]] = {}
    optional_inputs = set()
    for t in ensemble.input:
        tensors[t.name] = (t.data_type, _full_shape(ensemble, t), "<request>")
        if getattr(t, "optional", False):
            optional_inputs.add(t.name)
    steps = list(ensemble.ensemble_scheduling.step)
    if not steps:
        problems.append(f"{name}: no ensemble_scheduling steps")
    # pass 1: outputs of every step
    for step in steps:
        model = configs.get(step.model_name)
        if model is None:
            problems.append(f"{name}: step model {step.model_name!r} is not in the repository")
            continue
        if ensemble.max_batch_size > 0 and model.max_batch_size < ensemble.max_batch_size:
            problems.append(f"{name}: max_batch_size {ensemble.max_batch_size} exceeds {step.model_name}'s "
                            f"{model.max_batch_size}")
        outputs = {t.name: t for t in model.output}
        for key, tensor_name in step.output_map.items():
            if key not in outputs:
                problems.append(f"{name}: step {step.model_name} output_map key {key!r} is not an output of "
                                f"{step.model_name} (outputs: {sorted(outputs)})")
                continue
            if tensor_name in tensors:
                problems.append(f"{name}: tensor {tensor_name!r} is produced twice "
                                f"({tensors[tensor_name][2]} and {step.model_name})")
                continue
            tensors[tensor_name] = (outputs[key].data_type, _full_shape(model, outputs[key]), step.model_name)
    # pass 2: inputs
    consumed: set[str] = set()
    deps: dict[str, set[str]] = {}
    for step in steps:
        model = configs.get(step.model_name)
        if model is None:
            continue
        inputs = {t.name: t for t in model.input}
        deps[step.model_name] = set()
        for key, tensor_name in step.input_map.items():
            consumed.add(tensor_name)
            if key not in inputs:
                problems.append(f"{name}: step {step.model_name} input_map key {key!r} is not an input of "
                                f"{step.model_name} (inputs: {sorted(inputs)})")
                continue
            if tensor_name not in tensors:
                problems.append(f"{name}: step {step.model_name} reads {tensor_name!r}, which no step produces "
                                "and the request does not carry")
                continue
            dtype, shape, producer = tensors[tensor_name]
            want = inputs[key]
            if dtype != want.data_type:
                problems.append(f"{name}: dtype mismatch on {tensor_name!r}: {producer} gives {_dtype_name(dtype)}, "
                                f"{step.model_name}.{key} expects {_dtype_name(want.data_type)}")
            if not _shapes_compatible(shape, _full_shape(model, want)):
                problems.append(f"{name}: shape mismatch on {tensor_name!r}: {producer} gives {list(shape)}, "
                                f"{step.model_name}.{key} expects {list(_full_shape(model, want))}")
            if tensor_name in optional_inputs and not getattr(want, "optional", False):
                problems.append(f"{name}: optional input {tensor_name!r} feeds the required input "
                                f"{step.model_name}.{key}")
            if producer != "<request>":
                deps[step.model_name].add(producer)
        for key, tensor in inputs.items():
            if key not in step.input_map and not getattr(tensor, "optional", False):
                problems.append(f"{name}: required input {step.model_name}.{key} is not mapped")
    # ensemble outputs
    for t in ensemble.output:
        if t.name not in tensors:
            problems.append(f"{name}: output {t.name!r} is produced by no step")
            continue
        dtype, shape, producer = tensors[t.name]
        if dtype != t.data_type:
            problems.append(f"{name}: output {t.name!r} is {_dtype_name(t.data_type)} but {producer} gives "
                            f"{_dtype_name(dtype)}")
        if not _shapes_compatible(shape, _full_shape(ensemble, t)):
            problems.append(f"{name}: output {t.name!r} has shape {list(_full_shape(ensemble, t))} but {producer} "
                            f"gives {list(shape)}")
    for t in ensemble.input:
        if t.name not in consumed:
            problems.append(f"{name}: input {t.name!r} is consumed by no step")
    # cycles (Kahn)
    pending = {k: set(v) for k, v in deps.items()}
    while pending:
        ready = [k for k, v in pending.items() if not (v & set(pending))]
        if not ready:
            problems.append(f"{name}: steps form a cycle: {sorted(pending)}")
            break
        for k in ready:
            pending.pop(k)
    return problems


def check_repository(repository: Path, profile: str | None = None) -> list[str]:
    """Every problem found in a model repository (empty list: consistent). ``profile``: also check instance
    kinds (no KIND_GPU in cpu; onnxruntime / fil on KIND_GPU in gpu)."""
    repository = Path(repository)
    configs, problems = load_configs(repository)
    for name, config in configs.items():
        problems += check_model(repository, name, config, profile)
    problems += check_ensemble(configs)
    return problems


def validate_repository(repository: Path, profile: str | None = None) -> None:
    problems = check_repository(repository, profile)
    if problems:
        raise RepositoryError(problems)


# ================================================================================================================
# building
# ================================================================================================================
@dataclass
class BuildReport:
    path: Path
    profile: str
    artifact_version: str
    encoder_variant: str
    exported: bool  # False: a previous validated export was reused
    seconds: dict[str, float]


def _validation_texts(artifact_dir: Path, n: int) -> list[str]:
    """Essays of the artifact's test split for the export's PyTorch comparison (a fixed sample otherwise)."""
    try:
        from training.export_onnx import load_split

        rows = load_split(artifact_dir, "test")
        texts = rows.sample(n=min(n, len(rows)), random_state=0)["essay"].tolist()
        prompts = rows.sample(n=min(n, len(rows)), random_state=0)["prompt"].dropna().tolist()[: max(2, n // 4)]
        if texts:
            return texts + prompts
    except Exception as exc:  # noqa: BLE001 - data not available here: fall back, and say so
        log.warning("test split of %s unavailable (%s); validating the export on built-in texts", artifact_dir, exc)
    base = ("Some people believe that university education should be free for everyone, while others think "
            "students should pay for their studies. In my opinion, governments should cover most of the costs. ")
    return [base * k for k in (1, 3, 12)] + ["Write about the advantages and disadvantages of living in a city."]


def _existing_export(previous: Path | None, model_id: str, variant: str) -> Path | None:
    """The encoder version folder of a previous repository, if it holds a validated export of this encoder."""
    return None if previous is None else validated_export(previous / io.ENCODER / VERSION, model_id, variant)


def validated_export(folder: Path, model_id: str, variant: str) -> Path | None:
    """``folder`` if it holds an export of this encoder whose ``variant`` passed validation, else None."""
    from essayscore.onnx_encoder import META_FILE, VARIANT_FILES
    from training.export_onnx import REPORT_FILE

    try:
        meta = json.loads((folder / META_FILE).read_text())
        report = json.loads((folder / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = (meta.get("model_id") == model_id and (folder / VARIANT_FILES[variant]).is_file()
          and report.get("variants", {}).get(variant, {}).get("passed") is True)
    return folder if ok else None


def export_encoder_for(artifact_dir: Path, encoder_cfg: dict, variant: str, out_dir: Path, n_validation: int = 16,
                       band_limit: int = 0) -> dict:
    """Export the artifact's encoder as ``variant`` into ``out_dir``, validated against PyTorch on its test-split
    essays (int8 also end to end: the artifact's test QWK must not move); raises ExportValidationError."""
    from essayscore.encoder import Encoder
    from training.export_onnx import BandComparer, export_encoder, load_split

    encoder = Encoder(encoder_cfg["name"], window=encoder_cfg["window"], stride=encoder_cfg["stride"])
    if encoder.model_id != encoder_cfg["model_id"]:
        from essayscore.artifacts import ArtifactError

        raise ArtifactError(f"artifact encoder {encoder_cfg['model_id']!r} != local {encoder.model_id!r}")
    checks = {}
    if variant == "int8":  # int8's acceptance is end to end: the artifact's test QWK must not move (export_onnx)
        rows = load_split(artifact_dir, "test")
        rows = rows.head(band_limit) if band_limit > 0 else rows
        comparer = BandComparer(artifact_dir, rows["essay"].tolist(), rows["prompt"].tolist(), rows["band"].to_numpy())
        checks["int8"] = comparer.compare
    return export_encoder(encoder, out_dir, variants=(variant,), validation_texts=_validation_texts(artifact_dir, n_validation),
                          extra_checks=checks, report_extra={"artifact_version": artifact_dir.name})


def _copy_model_code(module: str, version_dir: Path) -> None:
    shutil.copy2(MODEL_CODE_DIR / f"{module}.py", version_dir / "model.py")


def build_repository(
    artifact_dir: Path,
    out: Path,
    profile: Profile = "cpu",
    cpu_variant: str = DEFAULT_CPU_VARIANT,
    intra_op_threads: int = 1,
    n_validation: int = 16,
    band_limit: int = 0,
    reuse_export: bool = True,
) -> BuildReport:
    """Build (or rebuild) the repository of the artifact at ``artifact_dir`` into ``out``; see the module doc."""
    from essayscore import artifacts
    from essayscore.error_detector import DETECTOR_FILE
    from essayscore.features import FEATURES
    from essayscore.onnx_encoder import ARTIFACT_EXPORT_DIR, META_FILE, VARIANT_FILES
    from essayscore.scorer import PREPROCESSOR_FILE, REGRESSOR_FILE, SCORING_FILE, Preprocessor

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if cpu_variant not in CPU_VARIANTS:
        raise ValueError(f"cpu_variant must be one of {CPU_VARIANTS}, got {cpu_variant!r}")
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    artifact_dir = Path(artifact_dir)
    manifest = artifacts.verify(artifact_dir)
    version = manifest["version"]
    config = json.loads((artifact_dir / "config.json").read_text())
    encoder_cfg = config["encoder"]
    preprocessor = Preprocessor.load(artifact_dir / PREPROCESSOR_FILE)
    sizes = GraphSizes(n_features=len(FEATURES), embedding_dim=int(encoder_cfg["dim"]),
                       n_model_features=len(preprocessor.output_names))
    if preprocessor.feature_names != [f.name for f in FEATURES]:
        raise artifacts.ArtifactError(f"artifact {version}'s handcrafted features differ from this code's registry")
    if not json.loads((artifact_dir / SCORING_FILE).read_text())["has_trees"]:
        raise artifacts.ArtifactError(f"artifact {version} has no residual trees ({SCORING_FILE}: has_trees is "
                                      "false): band_regressor has nothing to serve; score it in-process instead")
    detector_rel = f"{ARTIFACT_SUBDIR}/{DETECTOR_FILE}" if (artifact_dir / DETECTOR_FILE).is_file() else None
    variant = GPU_VARIANT if profile == "gpu" else cpu_variant
    onnx_file = VARIANT_FILES[variant]

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = out if out.is_dir() else None
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
    try:
        # ---- encoder: reuse or export -------------------------------------------------------------------------
        enc_dir = staging / io.ENCODER / VERSION
        reused = None
        if reuse_export:  # the artifact's own export (training writes it), else the previous repository's
            reused = (validated_export(artifact_dir / ARTIFACT_EXPORT_DIR, encoder_cfg["model_id"], variant)
                      or _existing_export(previous, encoder_cfg["model_id"], variant))
        t0 = time.perf_counter()
        if reused is not None:
            shutil.copytree(reused, enc_dir, ignore=shutil.ignore_patterns("model.py", "__pycache__"))
            for other in set(VARIANT_FILES.values()) - {onnx_file}:
                (enc_dir / other).unlink(missing_ok=True)
        else:
            enc_dir.mkdir(parents=True)
            export = export_encoder_for(artifact_dir, encoder_cfg, variant, enc_dir, n_validation, band_limit)
            if export.get("variants", {}).get(variant, {}).get("passed") is not True \
                    or not (enc_dir / onnx_file).is_file():
                raise RepositoryError([f"the {variant} encoder export did not pass validation: "
                                       f"{export.get('variants', {}).get(variant)}"])
        seconds["encoder_export"] = round(time.perf_counter() - t0, 2)
        meta = json.loads((enc_dir / META_FILE).read_text())
        graph = EncoderGraph(tuple(meta.get("inputs", ("input_ids", "attention_mask"))), meta.get("output", "embedding"))
        graph = EncoderGraph(graph.input_names, graph.output_name,
                             _check_onnx_io(enc_dir / onnx_file, graph, sizes.embedding_dim))

        # ---- preprocess: tokenizer + window settings (no weights, no .onnx), the learned error detector ---------
        tok_dir = staging / io.PREPROCESS / VERSION / TOKENIZER_SUBDIR
        tok_dir.mkdir(parents=True)
        for file in enc_dir.iterdir():
            if file.is_file() and file.suffix != ".onnx" and file.name != "export_report.json":
                shutil.copy2(file, tok_dir / file.name)
        if detector_rel is not None:  # without it the learned_errors features are NaN: not the model's scores
            detector = staging / io.PREPROCESS / VERSION / detector_rel
            detector.parent.mkdir(parents=True)
            shutil.copy2(artifact_dir / DETECTOR_FILE, detector)

        # ---- assemble / postprocess: artifact files -------------------------------------------------------------
        for model, files in ((io.ASSEMBLE, (PREPROCESSOR_FILE,)), (io.POSTPROCESS, (PREPROCESSOR_FILE, SCORING_FILE))):
            target = staging / model / VERSION / ARTIFACT_SUBDIR
            target.mkdir(parents=True)
            for name in files:
                shutil.copy2(artifact_dir / name, target / name)

        # ---- residual trees -------------------------------------------------------------------------------------
        t0 = time.perf_counter()
        target = staging / io.BAND_REGRESSOR / VERSION
        target.mkdir(parents=True)
        if profile == "gpu":
            shutil.copy2(artifact_dir / REGRESSOR_FILE, target / FIL_MODEL_FILE)
        else:
            from essayscore.compiled_trees import compile_xgboost

            compile_xgboost(artifact_dir / REGRESSOR_FILE, target, TREE_LIBRARY, nthread=max(1, os.cpu_count() or 1))
            sidecar = target / f"{TREE_LIBRARY}.tl2cgen.json"  # no absolute source path in the repository
            side = json.loads(sidecar.read_text())
            side["source_model"] = f"{version}/{REGRESSOR_FILE}"
            sidecar.write_text(json.dumps(side, indent=2))
        seconds["trees"] = round(time.perf_counter() - t0, 2)

        # ---- configs + model code -------------------------------------------------------------------------------
        specs = model_specs(profile, sizes, version, graph, onnx_file, intra_op_threads, detector_rel)
        code = {io.PREPROCESS: "preprocess", io.ENCODER: "encoder", io.ASSEMBLE: "assemble",
                io.BAND_REGRESSOR: "trees", io.POSTPROCESS: "postprocess"}
        for spec in specs:
            folder = staging / spec.name
            (folder / VERSION).mkdir(parents=True, exist_ok=True)
            (folder / "config.pbtxt").write_text(config_text(spec))
            if spec.backend == "python":
                _copy_model_code(code[spec.name], folder / VERSION)
        ensemble = ensemble_spec(sizes, graph)
        (staging / ensemble.name / VERSION).mkdir(parents=True)
        (staging / ensemble.name / "config.pbtxt").write_text(config_text(ensemble))
        readme = MODEL_CODE_DIR.parent.parent / "model_repository" / "README.md"
        if readme.is_file():  # the committed README travels with every generated repository
            shutil.copy2(readme, staging / "README.md")

        validate_repository(staging, profile)

        files = {p.relative_to(staging).as_posix(): artifacts.sha256_file(p) for p in sorted(staging.rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts}
        (staging / REPOSITORY_FILE).write_text(json.dumps({
            "generator": "training.build_repository",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "artifact_version": version,
            "artifact_manifest_sha256": artifacts.sha256_file(artifact_dir / artifacts.MANIFEST),
            "profile": profile,
            "encoder": {"model_id": encoder_cfg["model_id"], "variant": variant, "onnx": onnx_file,
                        "reused_export": reused is not None},
            "sizes": sizes.mapping(),
            "models": [s.name for s in specs] + [ensemble.name],
            "files": files,
        }, indent=2))

        # ---- swap in --------------------------------------------------------------------------------------------
        if previous is not None:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, old / "repo")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds["total"] = round(time.perf_counter() - t_start, 2)
    return BuildReport(out, profile, version, variant, reused is None, seconds)


def _check_onnx_io(path: Path, graph: EncoderGraph, dim: int) -> str:
    """The ONNX graph's inputs/outputs are what the encoder config declares (int64 ids/mask, float output of
    width ``dim``); returns the output's wire dtype ("FP32" or "FP16"), which the configs must declare."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    elem = onnx.TensorProto
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    problems = []
    for name in graph.input_names:
        if inputs.get(name) != elem.INT64:
            problems.append(f"input {name!r} is not int64 (inputs: {inputs})")
    out = outputs.get(graph.output_name)
    dtypes = {elem.FLOAT: "FP32", elem.FLOAT16: "FP16"}
    if out is None or out.type.tensor_type.elem_type not in dtypes:
        problems.append(f"output {graph.output_name!r} is missing or not float32/float16")
    else:
        last = out.type.tensor_type.shape.dim[-1]
        if last.HasField("dim_value") and last.dim_value != dim:
            problems.append(f"output dim {last.dim_value} != {dim}")
    if problems:
        raise RepositoryError([f"{path.name}: {p}" for p in problems])
    if dtypes[out.type.tensor_type.elem_type] != "FP32":
        log.warning("%s: output %r is %s, not float32", path.name, graph.output_name,
                    dtypes[out.type.tensor_type.elem_type])
    return dtypes[out.type.tensor_type.elem_type]


# ================================================================================================================
# CLI
# ================================================================================================================
def main(argv: Sequence[str] | None = None) -> int:
    from essayscore.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m training.build_repository", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="latest", help="artifact: latest, a version, a folder or a BentoML tag")
    parser.add_argument("--profile", choices=PROFILES, default="cpu")
    parser.add_argument("--out", type=Path, default=settings.model_repository)
    parser.add_argument("--cpu-variant", choices=CPU_VARIANTS, default=DEFAULT_CPU_VARIANT,
                        help="ONNX variant served by the cpu profile (int8 must pass the end-to-end QWK check)")
    parser.add_argument("--intra-op-threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads of the cpu encoder (0: usable cores). 1 is the default: "
                             "on the 2-core dev VM, 2 threads made the fp32 encoder 1.8x slower (400 vs 220 ms)")
    parser.add_argument("--band-limit", type=int, default=0, help="int8 QWK check on the first N test essays")
    parser.add_argument("--no-reuse-export", action="store_true", help="export the encoder even if already exported")
    parser.add_argument("--check", type=Path, default=None, metavar="REPO",
                        help="only check an existing repository (schema + cross-ensemble) and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args.check is not None:
        problems = check_repository(args.check)
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0

    from essayscore import artifacts

    artifact_dir = artifacts.resolve(args.model, settings.artifacts_dir)
    report = build_repository(artifact_dir, args.out, args.profile, cpu_variant=args.cpu_variant,
                              intra_op_threads=args.intra_op_threads, band_limit=args.band_limit,
                              reuse_export=not args.no_reuse_export)
    print(f"wrote the {report.profile} repository of {report.artifact_version} to {report.path} "
          f"(encoder {report.encoder_variant}, {'exported' if report.exported else 'export reused'}; "
          f"{report.seconds})")
    print(f"start it: python -m essayscore.triton_launcher --model-repository {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
