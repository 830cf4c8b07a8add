"""The repository checker (used by the generator, the tests and ``--check``): every ``config.pbtxt`` parses with
Triton's schema, each model's backend, dtypes, instance kinds, batching and files are consistent
(:func:`check_model`), and every ensemble mapping names a real tensor of its step model with the same dtype and
a compatible shape (:func:`check_ensemble`). Problems are collected, not raised one by one (:class:`RepositoryError`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from essayscore import triton_io as io
from training.repository.specs import FIL_MODEL_FILE, VERSION, _pb, parse_config


class RepositoryError(RuntimeError):
    """The generated (or given) repository is inconsistent; ``problems`` lists every finding."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("model repository check failed:\n  - " + "\n  - ".join(self.problems))



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
        if params.get("model_type") not in ("xgboost", "xgboost_json", "xgboost_ubj", "lightgbm",
                                            "treelite_checkpoint"):
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


def check_ensemble(configs: Mapping[str, Any], name: str = io.ENSEMBLE) -> list[str]:  # ModelConfig messages
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

