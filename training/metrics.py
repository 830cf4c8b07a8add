"""Evaluation metrics: band regression (RMSE, MAE, QWK, within half a band) and CEFR (accuracy, macro-F1, QWK, ECE)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

from essayscore.bands import CEFR_LEVELS, bands_to_cefr_index, half_band_index


def qwk(a: np.ndarray, b: np.ndarray) -> float:
    return float(cohen_kappa_score(np.asarray(a), np.asarray(b), weights="quadratic"))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: |accuracy - confidence| per confidence bin, weighted by the bin's share of rows."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def band_metrics(y: np.ndarray, raw: np.ndarray, band: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    return {
        "rmse": float(np.sqrt(np.mean((raw - y) ** 2))),
        "mae": float(np.mean(np.abs(raw - y))),
        "qwk": qwk(half_band_index(y), half_band_index(band)),
        "within_half_band": float(np.mean(np.abs(band - y) <= 0.5)),
        "exact_half_band": float(np.mean(band == y)),
    }


def cefr_metrics(y_band: np.ndarray, predicted_index: np.ndarray, probabilities: np.ndarray | None = None,
                 prefix: str = "cefr") -> dict[str, float]:
    truth = bands_to_cefr_index(y_band)
    labels = list(range(len(CEFR_LEVELS)))
    out = {
        f"{prefix}_accuracy": float(accuracy_score(truth, predicted_index)),
        f"{prefix}_macro_f1": float(f1_score(truth, predicted_index, labels=labels, average="macro", zero_division=0)),
        f"{prefix}_qwk": qwk(truth, predicted_index),
    }
    if probabilities is not None:
        out[f"{prefix}_ece"] = expected_calibration_error(probabilities, truth)
        out[f"{prefix}_log_loss"] = float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1))))
    return out


def interval_coverage(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, float]:
    return {"interval_coverage": float(np.mean((y >= low) & (y <= high))),
            "interval_mean_width": float(np.mean(high - low))}


def cefr_confusion(y_band: np.ndarray, predicted_index: np.ndarray) -> np.ndarray:
    return confusion_matrix(bands_to_cefr_index(y_band), predicted_index, labels=list(range(len(CEFR_LEVELS))))
