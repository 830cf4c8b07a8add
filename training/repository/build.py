"""Building the repository of one artifact version (:func:`build_repository`): the encoder export, or the reuse
of a validated one (:func:`validated_export`, :func:`export_encoder_for`), the compiled or copied residual trees,
the python models' code and files, every ``config.pbtxt``, the final check and ``repository.json``; built in a
staging folder and swapped in at the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from essayscore import triton_io as io
from training.repository.lint import RepositoryError, validate_repository
from training.repository.specs import (
    ARTIFACT_SUBDIR,
    FIL_MODEL_FILE,
    PROFILES,
    TOKENIZER_SUBDIR,
    TREE_LIBRARY,
    VERSION,
    EncoderGraph,
    GraphSizes,
    Profile,
    config_text,
    ensemble_spec,
    model_specs,
)

log = logging.getLogger(__name__)

REPOSITORY_FILE = "repository.json"
MODEL_CODE_DIR = Path(__file__).resolve().parent.parent.parent / "essayscore" / "triton_models"
CPU_VARIANTS = ("fp32", "int8")
# ONNX int8 serves the cpu profile: the fastest single-essay encoder here at the same test QWK (its export is
# refused if QWK moves by more than 0.01); see docs/benchmarks.md and the export report.
DEFAULT_CPU_VARIANT = "int8"
GPU_VARIANT = "fp16"


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
        from training.onnx_export import load_split, validation_sample

        sample = validation_sample(load_split(artifact_dir, "test"), n)
        texts = sample["essay"].tolist()
        prompts = sample["prompt"].dropna().tolist()[: max(2, n // 4)]
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
    from training.onnx_export import REPORT_FILE

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
    from essayscore.torch_encoder import TorchEncoder
    from training.onnx_export import BandComparer, export_encoder, load_split

    encoder = TorchEncoder(encoder_cfg["name"], window=encoder_cfg["window"], stride=encoder_cfg["stride"])
    if encoder.model_id != encoder_cfg["model_id"]:
        from essayscore.artifacts import ArtifactError

        raise ArtifactError(f"artifact encoder {encoder_cfg['model_id']!r} != local {encoder.model_id!r}")
    checks = {}
    if variant == "int8":  # int8's acceptance is end to end: the artifact's test QWK must not move (onnx_export)
        rows = load_split(artifact_dir, "test")
        rows = rows.head(band_limit) if band_limit > 0 else rows
        comparer = BandComparer(artifact_dir, rows["essay"].tolist(), rows["prompt"].tolist(),
                                rows["band"].to_numpy())
        checks["int8"] = comparer.compare
    return export_encoder(encoder, out_dir, variants=(variant,),
                          validation_texts=_validation_texts(artifact_dir, n_validation),
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
    from essayscore.artifacts import Artifact, Layout
    from essayscore.features import FEATURES
    from essayscore.onnx_encoder import META_FILE, VARIANT_FILES

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if cpu_variant not in CPU_VARIANTS:
        raise ValueError(f"cpu_variant must be one of {CPU_VARIANTS}, got {cpu_variant!r}")
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    artifact = Artifact(Path(artifact_dir))  # verified; a registry that is not this code's is refused here
    artifact_dir, version = artifact.dir, artifact.version
    encoder_cfg = artifact.encoder_config
    preprocessor = artifact.preprocessor()
    sizes = GraphSizes(n_features=len(FEATURES), embedding_dim=int(encoder_cfg["dim"]),
                       n_model_features=len(preprocessor.output_names))
    if preprocessor.feature_names != [f.name for f in FEATURES]:
        raise artifacts.ArtifactError(f"artifact {version}'s handcrafted features differ from this code's registry")
    if not artifact.scoring["has_trees"]:
        raise artifacts.ArtifactError(f"artifact {version} has no residual trees (has_trees is false): "
                                      "band_regressor has nothing to serve; score it in-process instead")
    detector_rel = f"{ARTIFACT_SUBDIR}/{Layout.DETECTOR}" if artifact.has(Layout.DETECTOR) else None
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
            reused = (validated_export(artifact.path(Layout.ONNX_EXPORT), encoder_cfg["model_id"], variant)
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
        graph = EncoderGraph(tuple(meta.get("inputs", ("input_ids", "attention_mask"))),
                             meta.get("output", "embedding"))
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
            shutil.copy2(artifact.path(Layout.DETECTOR), detector)

        # ---- assemble / postprocess: the scoring files as a partial artifact (own manifest, registry checked) ----
        for model in (io.ASSEMBLE, io.POSTPROCESS):
            artifact.copy_subset(staging / model / VERSION / ARTIFACT_SUBDIR, Layout.SCORING_FILES)

        # ---- residual trees -------------------------------------------------------------------------------------
        t0 = time.perf_counter()
        target = staging / io.BAND_REGRESSOR / VERSION
        target.mkdir(parents=True)
        if profile == "gpu":
            shutil.copy2(artifact.path(Layout.TREES), target / FIL_MODEL_FILE)
        else:
            from essayscore.compiled_trees import compile_xgboost

            compile_xgboost(artifact.path(Layout.TREES), target, TREE_LIBRARY, nthread=max(1, os.cpu_count() or 1))
            sidecar = target / f"{TREE_LIBRARY}.tl2cgen.json"  # no absolute source path in the repository
            side = json.loads(sidecar.read_text())
            side["source_model"] = f"{version}/{Layout.TREES}"
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
            "generator": "training.repository",
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
    if problems or out is None:  # out is None only with a problem listed
        raise RepositoryError([f"{path.name}: {p}" for p in problems])
    if dtypes[out.type.tensor_type.elem_type] != "FP32":
        log.warning("%s: output %r is %s, not float32", path.name, graph.output_name,
                    dtypes[out.type.tensor_type.elem_type])
    return dtypes[out.type.tensor_type.elem_type]

