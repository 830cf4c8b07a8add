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

from training.build_repository import (  # noqa: E402
    RepositoryError,
    check_repository,
    parse_config,
    validate_repository,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpu_repo(trained_artifact: Path, tmp_path_factory) -> Path:
    from training.build_repository import build_repository

    out = tmp_path_factory.mktemp("triton-gpu") / "model_repository"
    build_repository(trained_artifact, out, profile="gpu")
    return out


def _kinds(config) -> list[str]:
    from tritonclient.grpc import model_config_pb2 as pb

    return [pb.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group]


def _broken_copy(repo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("*.onnx"))  # configs are what matter here
    onnx = repo / "encoder" / "1" / "encoder.fp16.onnx"
    (copy / "encoder" / "1" / onnx.name).symlink_to(onnx)
    return copy


def test_gpu_configs_parse_and_line_up(gpu_repo: Path) -> None:
    assert check_repository(gpu_repo, "gpu") == []
    configs = {p.parent.name: parse_config(p) for p in gpu_repo.glob("*/config.pbtxt")}
    assert set(configs) == {io.ENSEMBLE, io.PREPROCESS, io.ENCODER, io.ASSEMBLE, io.BAND_REGRESSOR,
                            io.CEFR_CLASSIFIER, io.POSTPROCESS}

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
    assert report["variants"]["fp16"]["passed"] is True  # validated against PyTorch by training.export_onnx

    for name, classifier in ((io.BAND_REGRESSOR, False), (io.CEFR_CLASSIFIER, True)):
        fil = configs[name]
        params = {k: v.string_value for k, v in fil.parameters.items()}
        assert fil.backend == "fil" and fil.max_batch_size > 0 and fil.HasField("dynamic_batching")
        assert params["model_type"] == "xgboost_json"
        assert params["output_class"] == str(classifier).lower()
        assert params["predict_proba"] == str(classifier).lower()
        assert _kinds(fil) == ["KIND_GPU"]
        assert list(fil.output[0].dims) == ([6] if classifier else [1])
        assert (gpu_repo / name / "1" / "xgboost.json").is_file()
        assert not list((gpu_repo / name / "1").glob("*.so"))

    for name in (io.PREPROCESS, io.ASSEMBLE, io.POSTPROCESS):  # python models run on the CPU in both profiles
        assert configs[name].backend == "python" and _kinds(configs[name]) == ["KIND_CPU"]

    meta = json.loads((gpu_repo / "repository.json").read_text())
    assert meta["profile"] == "gpu" and meta["encoder"]["variant"] == "fp16"


def test_same_graph_as_cpu_profile(gpu_repo: Path) -> None:
    """Only backends differ between the profiles: the ensemble config is the one the cpu profile serves."""
    from training.build_repository import EncoderGraph, GraphSizes, config_text, ensemble_spec

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
    # not a ModelConfig at all
    (("cefr_classifier", r"max_batch_size: \d+", "max_batch_size: lots"), "does not parse as ModelConfig"),
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


def test_kind_gpu_in_cpu_profile_is_caught(gpu_repo: Path) -> None:
    problems = check_repository(gpu_repo, "cpu")
    assert any("KIND_GPU instances in the cpu profile" in p for p in problems), problems
