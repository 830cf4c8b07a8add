"""Generate the Triton model repository of one artifact version.

    python -m training.repository --model latest --profile cpu --out model_repository

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
``band_regressor`` to serve); exports the encoder with ``training.onnx_export`` (validated against PyTorch;
skipped when the repository already holds a validated export of the same encoder and variant); compiles the
residual trees with ``compile_xgboost`` (cpu) or copies their XGBoost JSON (gpu); copies what each python model
needs into its version folder (the artifact's ``error_detector.npz``, when it has one, into preprocess's: the
extractor needs it for the ``learned_errors`` features); writes every ``config.pbtxt`` from the typed
descriptions of :mod:`~training.repository.specs` (serialised through Triton's own protobuf schema,
``tritonclient.grpc.model_config_pb2.ModelConfig``); checks the whole repository with
:func:`~training.repository.lint.check_repository` (configs parse, files exist, every ensemble mapping names a real
tensor of the step model with the same dtype and a compatible shape); writes ``repository.json`` (artifact
version, profile, encoder, sha256 of every file). The repository is built in a temporary sibling folder and
swapped in at the end, so a failed build leaves the old one untouched.

Tensor names, dtypes and shapes come from :mod:`essayscore.triton_io`; the python models' code from
:mod:`essayscore.triton_models`. Modules: :mod:`~training.repository.specs` (typed descriptions, configs),
:mod:`~training.repository.lint` (the checker), :mod:`~training.repository.build` (``build_repository``) and
:mod:`~training.repository.cli` (``main``).
"""

from training.repository.build import (
    CPU_VARIANTS,
    DEFAULT_CPU_VARIANT,
    GPU_VARIANT,
    MODEL_CODE_DIR,
    REPOSITORY_FILE,
    BuildReport,
    build_repository,
    export_encoder_for,
    validated_export,
)
from training.repository.cli import main
from training.repository.lint import (
    RepositoryError,
    check_ensemble,
    check_model,
    check_repository,
    load_configs,
    validate_repository,
)
from training.repository.specs import (
    ARTIFACT_SUBDIR,
    FIL_MODEL_FILE,
    PROFILES,
    TOKENIZER_SUBDIR,
    TREE_LIBRARY,
    TREE_MAX_BATCH,
    VERSION,
    EncoderGraph,
    EnsembleSpec,
    GraphSizes,
    ModelSpec,
    Profile,
    StepSpec,
    config_text,
    ensemble_spec,
    model_specs,
    parse_config,
    to_config,
)

__all__ = [
    "ARTIFACT_SUBDIR",
    "CPU_VARIANTS",
    "DEFAULT_CPU_VARIANT",
    "FIL_MODEL_FILE",
    "GPU_VARIANT",
    "MODEL_CODE_DIR",
    "PROFILES",
    "REPOSITORY_FILE",
    "TOKENIZER_SUBDIR",
    "TREE_LIBRARY",
    "TREE_MAX_BATCH",
    "VERSION",
    "BuildReport",
    "EncoderGraph",
    "EnsembleSpec",
    "GraphSizes",
    "ModelSpec",
    "Profile",
    "RepositoryError",
    "StepSpec",
    "build_repository",
    "check_ensemble",
    "check_model",
    "check_repository",
    "config_text",
    "ensemble_spec",
    "export_encoder_for",
    "load_configs",
    "main",
    "model_specs",
    "parse_config",
    "to_config",
    "validate_repository",
    "validated_export",
]
