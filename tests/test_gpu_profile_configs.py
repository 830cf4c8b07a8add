"""The gpu profile (fp16 ONNX on the onnxruntime backend, FIL tree models), generated but not served: no GPU here.

Every config must parse with Triton's own protobuf schema and line up across the ensemble's steps; deliberately
broken copies must be caught by the same checker the generator runs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from essayscore import triton_io as io

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("onnxconverter_common")

from training.repository import (
    RepositoryError,
    check_repository,
    parse_config,
    validate_repository,
)

pytestmark = pytest.mark.slow


def _kinds(config) -> list[str]:
    from tritonclient.grpc import model_config_pb2 as pb

    return [pb.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group]


def _broken_copy(repo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("*.onnx"))  # configs are what matter here
    onnx = repo / "encoder" / "1" / "encoder.fp16.onnx"
    (copy / "encoder" / "1" / onnx.name).symlink_to(onnx)
    return copy


def test_gpu_configs_parse_and_line_up(gpu_repo: Path, trained_artifact: Path) -> None:
    from essayscore.artifacts import Layout, sha256_file

    assert check_repository(gpu_repo, "gpu") == []
    configs = {p.parent.name: parse_config(p) for p in gpu_repo.glob("*/config.pbtxt")}
    assert set(configs) == {io.ENSEMBLE, io.PREPROCESS, io.ENCODER, io.ASSEMBLE, io.BAND_REGRESSOR, io.POSTPROCESS}

    encoder = configs[io.ENCODER]
    assert encoder.backend == "onnxruntime" and encoder.default_model_filename == "encoder.fp16.onnx"
    assert _kinds(encoder) == ["KIND_GPU"]
    assert (gpu_repo / "encoder" / "1" / "encoder.fp16.onnx").is_file()
    # the encoder's declared output dtype is the ONNX graph's, and assemble reads EMBEDDING in that dtype
    import onnx

    graph = onnx.load(str(gpu_repo / "encoder" / "1" / "encoder.fp16.onnx"), load_external_data=False).graph
    onnx_dtype = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}[
        graph.output[0].type.tensor_type.elem_type]
    from tritonclient.grpc import model_config_pb2 as pb

    assert pb.DataType.Name(encoder.output[0].data_type) == onnx_dtype
    embedding = [t for t in configs[io.ASSEMBLE].input if t.name == io.EMBEDDING.name][0]
    assert pb.DataType.Name(embedding.data_type) == onnx_dtype
    report = json.loads((gpu_repo / "encoder" / "1" / "export_report.json").read_text())
    assert report["variants"]["fp16"]["passed"] is True  # validated against PyTorch by training.onnx_export

    # the residual trees: a FIL regressor (no classifier in the graph: CEFR probabilities come from postprocess)
    fil = configs[io.BAND_REGRESSOR]
    params = {k: v.string_value for k, v in fil.parameters.items()}
    assert fil.backend == "fil" and fil.max_batch_size > 0 and fil.HasField("dynamic_batching")
    assert params["model_type"] == "xgboost_json"
    assert params["output_class"] == "false" and params["predict_proba"] == "false"
    assert _kinds(fil) == ["KIND_GPU"]
    assert [t.name for t in fil.input] == ["input__0"] and [t.name for t in fil.output] == ["output__0"]
    assert list(fil.output[0].dims) == [1]
    assert sha256_file(gpu_repo / io.BAND_REGRESSOR / "1" / "xgboost.json") == sha256_file(
        trained_artifact / Layout.TREES)
    assert not list((gpu_repo / io.BAND_REGRESSOR / "1").glob("*.so"))

    # postprocess reads the trees' output and the model input row (assemble's FEATURE_VECTOR, also the trees' input)
    n_model_features = json.loads((gpu_repo / "repository.json").read_text())["sizes"]["n_model_features"]
    assert [(t.name, list(t.dims)) for t in configs[io.POSTPROCESS].input] == [
        (io.RAW_BAND.name, [1, 1]), (io.FEATURE_VECTOR.name, [1, n_model_features])]
    steps = {s.model_name: s for s in configs[io.ENSEMBLE].ensemble_scheduling.step}
    assert dict(steps[io.POSTPROCESS].input_map) == {io.RAW_BAND.name: io.RAW_BAND.name,
                                                     io.FEATURE_VECTOR.name: io.FEATURE_VECTOR.name}
    assert dict(steps[io.BAND_REGRESSOR].input_map) == {"input__0": io.FEATURE_VECTOR.name}
    assert dict(steps[io.ASSEMBLE].output_map) == {io.FEATURE_VECTOR.name: io.FEATURE_VECTOR.name}

    # preprocess gets the artifact's learned error detector (without it the learned_errors features are NaN)
    detector = {k: v.string_value for k, v in configs[io.PREPROCESS].parameters.items()}["error_detector"]
    assert sha256_file(gpu_repo / io.PREPROCESS / "1" / detector) == sha256_file(trained_artifact / Layout.DETECTOR)

    for name in (io.PREPROCESS, io.ASSEMBLE, io.POSTPROCESS):  # python models run on the CPU in both profiles
        assert configs[name].backend == "python" and _kinds(configs[name]) == ["KIND_CPU"]

    meta = json.loads((gpu_repo / "repository.json").read_text())
    assert meta["profile"] == "gpu" and meta["encoder"]["variant"] == "fp16"


def test_same_graph_as_cpu_profile(gpu_repo: Path) -> None:
    """Only backends differ between the profiles: the ensemble config is the one the cpu profile serves."""
    from training.repository import EncoderGraph, GraphSizes, config_text, ensemble_spec

    meta = json.loads((gpu_repo / "repository.json").read_text())
    sizes = GraphSizes(**meta["sizes"])
    assert (gpu_repo / io.ENSEMBLE / "config.pbtxt").read_text() == config_text(ensemble_spec(sizes, EncoderGraph()))


@pytest.mark.parametrize("edit,expected", [
    # dtype mismatch: postprocess expects FP64 where the regressor gives FP32
    (("postprocess", r'(name: "RAW_BAND"\n  data_type: )TYPE_FP32', r"\1TYPE_FP64"), "dtype mismatch on 'RAW_BAND'"),
    # an input_map key that the step model does not have
    (("essay_scorer", r'key: "input_ids"', 'key: "token_ids"'), "'token_ids' is not an input of encoder"),
    # shape mismatch: assemble's vector no longer matches the trees' input width
    (("assemble", r'(name: "FEATURE_VECTOR"\n  data_type: TYPE_FP32\n  dims: 1\n  dims: )\d+', r"\g<1>7"),
     "shape mismatch on 'FEATURE_VECTOR'"),
    # postprocess's model input row no longer matches assemble's FEATURE_VECTOR
    (("postprocess", r'(name: "FEATURE_VECTOR"\n  data_type: TYPE_FP32\n  dims: 1\n  dims: )\d+', r"\g<1>7"),
     "postprocess.FEATURE_VECTOR expects [1, 7]"),
    # the ensemble no longer feeds the model input row to postprocess
    (("essay_scorer",
      r'(model_name: "postprocess"\n    model_version: -1\n    input_map \{\n      key: )"FEATURE_VECTOR"',
      r'\1"FEATURES_VECTOR"'), "required input postprocess.FEATURE_VECTOR is not mapped"),
    # not a ModelConfig at all
    (("band_regressor", r"max_batch_size: \d+", "max_batch_size: lots"), "does not parse as ModelConfig"),
    # FIL without batching
    (("band_regressor", r"max_batch_size: \d+", "max_batch_size: 0"), "FIL needs max_batch_size > 0"),
])
def test_broken_configs_are_caught(gpu_repo: Path, tmp_path: Path, edit, expected) -> None:
    model, pattern, replacement = edit
    broken = _broken_copy(gpu_repo, tmp_path)
    path = broken / model / "config.pbtxt"
    text, n = re.subn(pattern, replacement, path.read_text(), count=1)
    assert n == 1, f"pattern {pattern!r} not found in {model}/config.pbtxt"
    path.write_text(text)
    problems = check_repository(broken, "gpu")
    assert any(expected in p for p in problems), problems
    with pytest.raises(RepositoryError):
        validate_repository(broken, "gpu")


def test_missing_error_detector_is_caught(gpu_repo: Path, tmp_path: Path) -> None:
    broken = _broken_copy(gpu_repo, tmp_path)
    (broken / io.PREPROCESS / "1" / "artifact" / "error_detector.npz").unlink()
    problems = check_repository(broken, "gpu")
    assert any("preprocess: parameter error_detector" in p and "does not exist" in p for p in problems), problems


def test_artifact_without_trees_is_refused(trained_artifact: Path, tmp_path: Path) -> None:
    """No residual trees (``has_trees`` false): nothing for band_regressor to serve, so no repository is built."""
    from essayscore.artifacts import ArtifactError, Layout, verify, write_manifest
    from training.repository import build_repository

    artifact = tmp_path / "artifact"
    shutil.copytree(trained_artifact, artifact, ignore=shutil.ignore_patterns(Layout.ONNX_EXPORT, Layout.TREES))
    scoring = json.loads((artifact / Layout.SCORING).read_text())
    (artifact / Layout.SCORING).write_text(json.dumps({**scoring, "has_trees": False}))
    write_manifest(artifact, verify(trained_artifact)["version"])
    out = tmp_path / "model_repository"
    with pytest.raises(ArtifactError, match="no residual trees"):
        build_repository(artifact, out, profile="gpu")
    assert not out.exists()


def test_kind_gpu_in_cpu_profile_is_caught(gpu_repo: Path) -> None:
    problems = check_repository(gpu_repo, "cpu")
    assert any("KIND_GPU instances in the cpu profile" in p for p in problems), problems
