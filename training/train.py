"""Train the default model end to end: sources -> splits -> error detector -> features (+ embeddings) ->
latent ordinal model (linear + residual trees) -> calibration -> metrics -> a versioned artifact registered in
the BentoML model store.

    essayscore train [--sources ielts,wi] [--data essays.csv | --hub chillies/IELTS-writing-task-2-evaluation]
                     [--encoder minilm]

Read top to bottom; every knob is in TrainConfig.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from essayscore import artifacts
from essayscore.artifacts import Artifact, Layout
from essayscore.settings import get_settings
from essayscore.torch_encoder import TorchEncoder
from training import drift_reference, model_card
from training.data import LoadedEssays
from training.error_detector import DetectorConfig, detector_stage
from training.fit import FitConfig, TreeConfig, fit_scoring_model, predict_rows
from training.matrices import Matrices, build_matrices
from training.metrics import split_metrics
from training.sources import DEFAULT_SOURCES, inventory, licence_summary, load_sources, load_wi_edits
from training.splits import assign_splits

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    sources: tuple[str, ...] = DEFAULT_SOURCES  # "ielts" alone: no non-commercial source
    data_path: str | None = None  # IELTS CSV; default: settings.data_path (the shared CSV)
    hub_dataset: str | None = None  # e.g. "chillies/IELTS-writing-task-2-evaluation": load from the HF hub instead
    wi_path: str | None = None  # W&I texts.jsonl; default: beside the shared IELTS folder
    encoder: str | None = None  # default: settings.encoder ("minilm"; "roberta-large" in production)
    # Embedding principal components the model sees. 0 (the default) retires the frozen embeddings from the
    # score: measured in docs/evaluation.md, they add nothing on either source. The encoder still runs for the
    # prompt-similarity feature and the off-topic warning.
    pca_components: int | None = 0
    error_detector: bool = True  # train the learned error detector on the W&I gold edits (needs source "wi")
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    # encoder export shipped inside the artifact for serving (validated; int8 = 2.5x faster encoder on a CPU,
    # docs/performance.md); None: no export, the embedded runtime then runs PyTorch
    serving_encoder_variant: str | None = "int8"
    fit: FitConfig = field(default_factory=FitConfig)
    # set by the retraining gate (training/gate.py): the sha256 of the pinned evaluation set this model is judged on
    evaluation_set_sha256: str | None = None
    holdout_path: str | None = None  # its JSON-lines file: those essays go to the test split, never fitted on

    @property
    def trees(self) -> TreeConfig:
        return self.fit.trees


def load_data(cfg: TrainConfig) -> LoadedEssays:
    return load_sources(tuple(cfg.sources), ielts_csv=cfg.data_path, hub_dataset=cfg.hub_dataset,
                        wi_jsonl=cfg.wi_path)


def evaluate_split(model, m: Matrices, index: np.ndarray) -> dict[str, float]:
    """Per-source metrics on one split (IELTS: bands; W&I: its own CEFR scale)."""
    return split_metrics(model, m, index, predict_rows(model, m, index))


def feature_statistics(m: Matrices, index: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Training-set distribution of every handcrafted feature: the reference for drift monitoring."""
    stats = {}
    for j, name in enumerate(m.feature_names):
        column = m.handcrafted[index, j].astype(np.float64)
        finite = column[np.isfinite(column)]
        q = np.quantile(finite, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]) if len(finite) else [np.nan] * 7
        stats[name] = {"mean": float(np.mean(finite)) if len(finite) else None,
                       "std": float(np.std(finite)) if len(finite) else None,
                       "missing_share": float(1 - len(finite) / len(column)),
                       **{f"p{p}": (float(v) if np.isfinite(v) else None)
                          for p, v in zip((1, 5, 25, 50, 75, 95, 99), q)}}
    return stats


def write_artifact(directory: Path, model, loaded: LoadedEssays, splits: pd.DataFrame, m: Matrices,
                   cfg: TrainConfig, encoder: TorchEncoder, metrics: dict, version: str, detector=None) -> dict:
    directory.mkdir(parents=True)
    model.save(directory)
    if detector is not None:
        detector.save(directory / Layout.DETECTOR)
    train_index = np.flatnonzero(splits["split"].to_numpy() == "train")
    files = {
        Layout.REGISTRY: artifacts.code_registry(),
        Layout.FEATURE_STATS: feature_statistics(m, train_index),
        Layout.CONFIG: {"train": asdict(cfg), "encoder": {"name": encoder.name, "model_id": encoder.model_id,
                                                          "dim": encoder.dim, "window": encoder.window,
                                                          "stride": encoder.stride}},
        Layout.METRICS: metrics,
        Layout.DATA_REPORT: {"loaded": len(loaded.essays), "rejected": loaded.rejected.to_dict(orient="records")},
        Layout.SOURCES: {"sources": inventory(loaded.essays), "licence": licence_summary(cfg.sources)},
    }
    for name, payload in files.items():
        (directory / name).write_text(json.dumps(payload, indent=2, default=str))
    # after the model and registry files (it explains the model to rank features), before the manifest
    (directory / Layout.DRIFT_REFERENCE).write_text(json.dumps(
        drift_reference.build(Artifact(directory, in_progress=True), model, m, splits)))
    splits.to_csv(directory / Layout.SPLITS, index=False)
    model_card.write(directory, directory / Layout.MODEL_CARD, version)
    return artifacts.write_manifest(directory, version, manifest_extra(encoder, metrics, cfg))


HEADLINE_KEYS = ("ielts_qwk", "ielts_rmse", "ielts_cefr_macro_f1", "wi_spearman", "wi_cefr_qwk")


def manifest_extra(encoder: TorchEncoder, metrics: dict, cfg: TrainConfig) -> dict:
    return {"encoder": encoder.name, "encoder_model_id": encoder.model_id,
            "sources": list(cfg.sources), "licence": licence_summary(cfg.sources),
            "metrics": {split: {k: metrics["splits"][split][k] for k in HEADLINE_KEYS if k in metrics["splits"][split]}
                        for split in metrics["splits"]}}


def add_serving_encoder(directory: Path, variant: str, encoder: TorchEncoder, metrics: dict, version: str,
                        cfg: TrainConfig) -> bool:
    """Export the encoder as ``variant`` into the artifact's ONNX export folder (validated against PyTorch; int8
    also on the test QWK) and re-write the manifest. A refused export is logged and leaves the artifact as it was."""
    try:
        from training.onnx_export import ExportValidationError
        from training.repository import export_encoder_for
    except ImportError as exc:  # the [export] extra (onnx, onnxconverter-common) is not installed
        print(f"serving encoder export skipped ({exc}; pip install 'essayscore[export]'): the artifact serves PyTorch")
        return False

    config = Artifact(directory, in_progress=True).config
    # staged beside the artifact: the end-to-end check loads the artifact, which must verify meanwhile
    staging = directory.with_name(directory.name + ".onnx")
    shutil.rmtree(staging, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        export_encoder_for(directory, config["encoder"], variant, staging)
        staging.rename(directory / Layout.ONNX_EXPORT)
    except ExportValidationError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("serving encoder export (%s) refused, the artifact serves PyTorch: %s", variant, exc)
        print(f"serving encoder export ({variant}) refused: {exc}")
        return False
    artifacts.write_manifest(directory, version, manifest_extra(encoder, metrics, cfg))
    print(f"serving encoder: {variant} ONNX export validated into {Layout.ONNX_EXPORT}/ "
          f"in {time.perf_counter() - t0:.0f} s")
    return True


def train(cfg: TrainConfig = TrainConfig(), register: bool = True) -> Path:
    settings = get_settings()
    started = time.perf_counter()
    loaded = load_data(cfg)
    print(loaded.summary())
    essays = loaded.essays
    splits = assign_splits(essays)
    if cfg.holdout_path:  # the gate's pinned evaluation essays stay out of training and validation
        held = set(pd.read_json(cfg.holdout_path, lines=True, dtype={"essay_id": str})["essay_id"])
        splits.loc[splits["essay_id"].isin(held), "split"] = "test"
    index = {name: np.flatnonzero(splits["split"].to_numpy() == name) for name in ("train", "validation", "test")}
    print("split sizes:", {k: len(v) for k, v in index.items()})

    detector = None
    learned = None
    detector_metrics = None
    if cfg.error_detector and "wi" in cfg.sources:
        stage = detector_stage(essays, load_wi_edits(cfg.wi_path), cfg.detector)
        detector, learned, detector_metrics = stage.detector, stage.features, stage.metrics
        print("error detector (writer-grouped CV, token level):",
              {k: round(v, 3) for k, v in stage.metrics["writer_grouped_cv"].items()})
    detector_done = time.perf_counter()
    encoder = TorchEncoder(cfg.encoder)
    m = build_matrices(essays, encoder, settings.cache_dir, learned=learned,
                       prompted_only=cfg.pca_components == 0)
    prepared = time.perf_counter()

    model = fit_scoring_model(m, index["train"], index["validation"], cfg.pca_components, cfg.fit)
    booster = getattr(model.trees, "regressor", None)
    metrics = {
        "splits": {name: evaluate_split(model, m, rows) for name, rows in index.items()},
        "sources": list(cfg.sources),
        "pca_components": cfg.pca_components,
        "interval_level": cfg.fit.interval_level,
        "trees": {"regressor": booster.num_boosted_rounds() if booster is not None else 0},
        "harmonisation": {"source_cuts": model.source_cuts, "source_scales": model.source_scales,
                          "under_length_weight": model.under_length_weight,
                          "length_weight": model.linear.length_weight, "band_scale": model.scale},
        "error_detector": detector_metrics,
        "n_model_features": len(model.feature_names),
        "timings_s": {"error_detector": round(detector_done - started, 1),
                      "features_and_embeddings": round(prepared - detector_done, 1),
                      "fit": round(time.perf_counter() - prepared, 1)},
    }
    version = artifacts.new_version()
    directory = Path(settings.artifacts_dir) / version
    tmp = directory.with_name(version + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    write_artifact(tmp, model, loaded, splits, m, cfg, encoder, metrics, version, detector)
    if cfg.serving_encoder_variant:
        add_serving_encoder(tmp, cfg.serving_encoder_variant, encoder, metrics, version, cfg)
    tmp.rename(directory)  # an artifact folder appears complete or not at all
    tag = artifacts.register(directory) if register else None
    print(f"artifact {directory}" + (f" registered as {tag}" if tag else ""))
    print(json.dumps(metrics["splits"], indent=2))
    print(f"total {time.perf_counter() - started:.0f} s")
    return directory
