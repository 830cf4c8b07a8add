"""Train the default model end to end: data -> splits -> features + embeddings -> XGBoost -> calibration ->
metrics -> a versioned artifact registered in the BentoML model store.

    essayscore train [--data essays.csv | --hub chillies/IELTS-writing-task-2-evaluation] [--encoder minilm]

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
from essayscore.bands import CEFR_LEVELS
from essayscore.encoder import Encoder
from essayscore.features import FEATURES
from essayscore.settings import get_settings
from training.data import LoadedEssays, load_csv, load_hub
from training.fit import Matrices, TreeConfig, fit_scoring_model, predict_rows
from training.matrices import build_matrices
from training.metrics import band_metrics, cefr_metrics, interval_coverage
from training.splits import assign_splits

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data_path: str | None = None  # default: settings.data_path (the shared CSV)
    hub_dataset: str | None = None  # e.g. "chillies/IELTS-writing-task-2-evaluation": load from the HF hub instead
    encoder: str | None = None  # default: settings.encoder ("minilm"; "roberta-large" in production)
    pca_candidates: tuple[int | None, ...] = (16, 32, 64)  # embedding PCA sizes tried; chosen on validation RMSE
    interval_level: float = 0.9  # conformal band interval coverage target
    # encoder export shipped inside the artifact for serving (validated; int8 = 2.5x faster encoder on a CPU,
    # docs/performance.md); None: no export, the embedded runtime then runs PyTorch
    serving_encoder_variant: str | None = "int8"
    trees: TreeConfig = field(default_factory=TreeConfig)


def load_data(cfg: TrainConfig) -> LoadedEssays:
    if cfg.hub_dataset:
        return load_hub(cfg.hub_dataset)
    return load_csv(cfg.data_path or get_settings().data_path)


def evaluate_split(model, m: Matrices, index: np.ndarray) -> dict[str, float]:
    """Band and CEFR metrics on one split; CEFR both from the band (what the API reports) and from the classifier."""
    pred = predict_rows(model, m, index)
    y = m.band[index]
    return {
        "n": int(len(index)),
        **band_metrics(y, pred.raw, pred.band),
        **cefr_metrics(y, pred.cefr_index, pred.probabilities, prefix="cefr"),
        **cefr_metrics(y, pred.probabilities.argmax(axis=1), None, prefix="cefr_classifier"),
        **interval_coverage(y, pred.band_low, pred.band_high),
    }


def choose_pca(m: Matrices, train: np.ndarray, val: np.ndarray, cfg: TrainConfig) -> tuple[int | None, list[dict]]:
    trials = []
    for k in cfg.pca_candidates:
        model = fit_scoring_model(m, train, val, k, cfg.trees, interval_level=cfg.interval_level)
        pred = predict_rows(model, m, val)
        trials.append({"pca_components": k, **band_metrics(m.band[val], pred.raw, pred.band)})
        log.info("PCA %s: validation %s", k, trials[-1])
    best = min(trials, key=lambda t: t["rmse"])
    return best["pca_components"], trials


def feature_statistics(m: Matrices, index: np.ndarray) -> dict[str, dict[str, float]]:
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
                   cfg: TrainConfig, encoder: Encoder, metrics: dict, version: str) -> dict:
    directory.mkdir(parents=True)
    model.save(directory)
    train_index = np.flatnonzero(splits["split"].to_numpy() == "train")
    files = {
        "feature_registry.json": [{"name": f.name, "group": f.group, "description": f.description,
                                   "needs_embeddings": f.needs_embeddings} for f in FEATURES],
        "feature_stats.json": feature_statistics(m, train_index),
        "config.json": {"train": asdict(cfg), "encoder": {"name": encoder.name, "model_id": encoder.model_id,
                                                          "dim": encoder.dim, "window": encoder.window,
                                                          "stride": encoder.stride}},
        "metrics.json": metrics,
        "data_report.json": {"loaded": len(loaded.essays), "rejected": loaded.rejected.to_dict(orient="records")},
    }
    for name, payload in files.items():
        (directory / name).write_text(json.dumps(payload, indent=2, default=str))
    splits.to_csv(directory / "splits.csv", index=False)
    return artifacts.write_manifest(directory, version, manifest_extra(encoder, metrics))


def manifest_extra(encoder: Encoder, metrics: dict) -> dict:
    return {"encoder": encoder.name, "encoder_model_id": encoder.model_id,
            "metrics": {split: {k: metrics["splits"][split][k] for k in ("qwk", "rmse", "cefr_macro_f1")}
                        for split in metrics["splits"]}}


def add_serving_encoder(directory: Path, variant: str, encoder: Encoder, metrics: dict, version: str) -> bool:
    """Export the encoder as ``variant`` into ``directory/encoder_onnx`` (validated against PyTorch; int8 also
    on the test QWK) and re-write the manifest. A refused export is logged and leaves the artifact as it was."""
    from essayscore.onnx_encoder import ARTIFACT_EXPORT_DIR

    try:
        from training.build_repository import export_encoder_for
        from training.export_onnx import ExportValidationError
    except ImportError as exc:  # the [export] extra (onnx, onnxconverter-common) is not installed
        print(f"serving encoder export skipped ({exc}; pip install 'essayscore[export]'): the artifact serves PyTorch")
        return False

    config = json.loads((directory / "config.json").read_text())
    # staged beside the artifact: the end-to-end check loads the artifact, which must verify meanwhile
    staging = directory.with_name(directory.name + ".onnx")
    shutil.rmtree(staging, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        export_encoder_for(directory, config["encoder"], variant, staging)
        staging.rename(directory / ARTIFACT_EXPORT_DIR)
    except ExportValidationError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("serving encoder export (%s) refused, the artifact serves PyTorch: %s", variant, exc)
        print(f"serving encoder export ({variant}) refused: {exc}")
        return False
    artifacts.write_manifest(directory, version, manifest_extra(encoder, metrics))
    print(f"serving encoder: {variant} ONNX export validated into {ARTIFACT_EXPORT_DIR}/ "
          f"in {time.perf_counter() - t0:.0f} s")
    return True


def train(cfg: TrainConfig = TrainConfig(), register: bool = True) -> Path:
    settings = get_settings()
    started = time.perf_counter()
    loaded = load_data(cfg)
    print(loaded.summary())
    essays = loaded.essays
    splits = assign_splits(essays)
    index = {name: np.flatnonzero(splits["split"].to_numpy() == name) for name in ("train", "validation", "test")}
    print("split sizes:", {k: len(v) for k, v in index.items()})

    encoder = Encoder(cfg.encoder)
    m = build_matrices(essays, encoder, settings.cache_dir)
    prepared = time.perf_counter()

    pca, pca_trials = choose_pca(m, index["train"], index["validation"], cfg)
    model = fit_scoring_model(m, index["train"], index["validation"], pca, cfg.trees, interval_level=cfg.interval_level)
    metrics = {
        "splits": {name: evaluate_split(model, m, rows) for name, rows in index.items()},
        "pca_selection": pca_trials,
        "chosen_pca_components": pca,
        "interval_level": cfg.interval_level,
        "trees": {"regressor": model.trees.regressor.num_boosted_rounds(),
                  "classifier_rounds": model.trees.classifier.num_boosted_rounds(),
                  "classifier_trees": model.trees.classifier.num_boosted_rounds() * len(CEFR_LEVELS)},
        "n_model_features": len(model.feature_names),
        "timings_s": {"features_and_embeddings": round(prepared - started, 1),
                      "fit": round(time.perf_counter() - prepared, 1)},
    }
    version = artifacts.new_version()
    directory = Path(settings.artifacts_dir) / version
    tmp = directory.with_name(version + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    write_artifact(tmp, model, loaded, splits, m, cfg, encoder, metrics, version)
    if cfg.serving_encoder_variant:
        add_serving_encoder(tmp, cfg.serving_encoder_variant, encoder, metrics, version)
    tmp.rename(directory)  # an artifact folder appears complete or not at all
    tag = artifacts.register(directory) if register else None
    print(f"artifact {directory}" + (f" registered as {tag}" if tag else ""))
    print(json.dumps(metrics["splits"], indent=2))
    print(f"total {time.perf_counter() - started:.0f} s")
    return directory
