"""Evaluation report: the shipped model per split, two baselines on the same splits, prompt-grouped K-fold
cross-validation, ablations by feature group, a CEFR confusion matrix and a calibration plot.

    essayscore evaluate [--model latest] [--out docs]   ->  docs/evaluation.md + docs/*.png
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from essayscore import artifacts
from essayscore.bands import bands_to_cefr_index
from essayscore.encoder import Encoder
from essayscore.features import FEATURES, GROUPS
from essayscore.scorer import ScoringModel, bands_from_raw, default_cuts
from essayscore.settings import get_settings
from training.data import load_csv, load_hub
from training.fit import Matrices, TreeConfig, fit_scoring_model, predict_rows
from training.matrices import build_matrices
from training.metrics import band_metrics, cefr_confusion, cefr_metrics, interval_coverage
from training.report import write_report
from training.splits import cv_folds

# The "small set of handcrafted features" baseline: plain counts and rates any essay scorer starts from.
SMALL_FEATURE_SET = ("word_count", "sentence_count", "mean_sentence_length", "mean_word_length", "ttr", "root_ttr",
                     "unique_word_count", "long_word_share", "rare_word_share", "mean_content_zipf",
                     "flesch_reading_ease", "typos_per_100w", "grammar_per_100w", "punctuation_per_100w",
                     "error_rate_per_100w", "connectives_per_100w")


@dataclass
class Variant:
    """One row of the comparison: how to fit on (fit, validation) rows and predict others."""

    name: str
    fit_predict: Callable[[Matrices, np.ndarray, np.ndarray, np.ndarray], dict]


def _feature_index(names: list[str], wanted) -> list[int]:
    missing = [n for n in wanted if n not in names]
    if missing:
        raise KeyError(f"features not in the registry: {missing}")
    return [names.index(n) for n in wanted]


def _length_ridge(m: Matrices, fit: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict:
    col = m.feature_names.index("word_count")
    x = np.nan_to_num(m.handcrafted[:, [col]].astype(np.float64))
    model = Ridge(alpha=1.0).fit(x[fit], m.band[fit])
    raw = model.predict(x[test])
    band = bands_from_raw(raw, default_cuts())
    return {**band_metrics(m.band[test], raw, band), **cefr_metrics(m.band[test], bands_to_cefr_index(band))}


def _trees(pca: int | None, features: list[int] | None, trees: TreeConfig):
    def run(m: Matrices, fit: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict:
        model = fit_scoring_model(m, fit, val, pca, trees, features=features)
        pred = predict_rows(model, m, test, features)
        y = m.band[test]
        return {**band_metrics(y, pred.raw, pred.band), **cefr_metrics(y, pred.cefr_index, pred.probabilities),
                **interval_coverage(y, pred.band_low, pred.band_high)}
    return run


def variants(m: Matrices, pca: int | None, trees: TreeConfig, ablations: bool) -> list[Variant]:
    names = m.feature_names
    small = _feature_index(names, SMALL_FEATURE_SET)
    out = [
        Variant("baseline: length-only ridge", _length_ridge),
        Variant(f"baseline: {len(small)} simple features + XGBoost", _trees(0, small, trees)),
        Variant("model: all features + embeddings (shipped configuration)", _trees(pca, None, trees)),
    ]
    if ablations:
        out.append(Variant("ablation: handcrafted features only (no embeddings)", _trees(0, None, trees)))
        out.append(Variant("ablation: embeddings only (+ prompt similarity)", _trees(
            pca, _feature_index(names, [f.name for f in FEATURES if f.needs_embeddings]), trees)))
        for group in GROUPS:
            keep = [i for i, f in enumerate(FEATURES) if f.group != group]
            out.append(Variant(f"ablation: without {group}", _trees(pca, keep, trees)))
    return out


def cross_validate(essays: pd.DataFrame, m: Matrices, variant_list: list[Variant], folds: int) -> pd.DataFrame:
    rows = []
    for k, (fit, val, held) in enumerate(cv_folds(essays, folds)):
        for v in variant_list:
            rows.append({"variant": v.name, "fold": k, **v.fit_predict(m, fit, val, held)})
        print(f"cv fold {k + 1}/{folds} done")
    return pd.DataFrame(rows)


def evaluate(reference: str, out_dir: Path, folds: int = 5, ablations: bool = True) -> Path:
    started = time.perf_counter()
    settings = get_settings()
    directory = artifacts.resolve(reference, settings.artifacts_dir)
    manifest = artifacts.verify(directory)
    config = json.loads((directory / "config.json").read_text())
    train_cfg = config["train"]
    loaded = load_hub(train_cfg["hub_dataset"]) if train_cfg.get("hub_dataset") else \
        load_csv(train_cfg.get("data_path") or settings.data_path)
    essays = loaded.essays
    splits = pd.read_csv(directory / "splits.csv")
    if list(splits["essay_id"]) != list(essays["essay_id"]):
        raise artifacts.ArtifactError("the data no longer matches the artifact's split manifest")
    enc = config["encoder"]
    m = build_matrices(essays, Encoder(enc["name"], window=enc["window"], stride=enc["stride"]), settings.cache_dir)
    trees = TreeConfig(**train_cfg["trees"])
    metrics = json.loads((directory / "metrics.json").read_text())
    pca = metrics["chosen_pca_components"]

    # the shipped model on its own splits, and the baselines fitted on the same train/validation rows
    index = {s: np.flatnonzero(splits["split"].to_numpy() == s) for s in ("train", "validation", "test")}
    shipped = ScoringModel.load(directory)
    test_pred = predict_rows(shipped, m, index["test"])
    split_rows = [{"variant": "model (shipped artifact)", "split": s, **metrics["splits"][s]} for s in index]
    for v in variants(m, pca, trees, ablations=False)[:2]:
        split_rows.append({"variant": v.name, "split": "test",
                           **v.fit_predict(m, index["train"], index["validation"], index["test"])})
    cv = cross_validate(essays, m, variants(m, pca, trees, ablations), folds)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = write_report(
        out_dir, manifest=manifest, metrics=metrics, split_rows=pd.DataFrame(split_rows), cv=cv,
        confusion=cefr_confusion(m.band[index["test"]], test_pred.cefr_index),
        test_truth=m.band[index["test"]], test_pred=test_pred, loaded=loaded, folds=folds,
        seconds=time.perf_counter() - started)
    print(f"report: {report}")
    return report
