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
        true_class_p = probabilities[np.arange(len(truth)), truth]
        out[f"{prefix}_log_loss"] = float(-np.mean(np.log(np.clip(true_class_p, 1e-12, 1))))
    return out


def interval_coverage(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, float]:
    return {"interval_coverage": float(np.mean((y >= low) & (y <= high))),
            "interval_mean_width": float(np.mean(high - low))}


def cefr_confusion(y_band: np.ndarray, predicted_index: np.ndarray) -> np.ndarray:
    return confusion_matrix(bands_to_cefr_index(y_band), predicted_index, labels=list(range(len(CEFR_LEVELS))))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0]) if len(a) > 2 else float("nan")


def ielts_metrics(y: np.ndarray, pred, words: np.ndarray | None = None) -> dict[str, float]:
    """IELTS rows: bands (QWK on half bands, RMSE, MAE, within 0.5), table CEFR with its calibration, interval."""
    out = {"n": int(len(y)), **band_metrics(y, pred.raw, pred.band),
           **cefr_metrics(y, pred.cefr_index, pred.probabilities, prefix="cefr"),
           **interval_coverage(y, pred.band_low, pred.band_high), "spearman": spearman(pred.raw, y)}
    if words is not None:
        out["words_spearman"] = spearman(words, y)
    return out


def wi_metrics(levels: np.ndarray, pred, model, words: np.ndarray | None = None) -> dict[str, float]:
    """CEFR-labelled rows (W&I sub-levels 0-11): ranking of the latent proficiency, CEFR agreement through the
    source's learned cut points (``cefr_*``) and through the API's band table (``api_cefr_*``)."""
    truth = np.asarray(levels) // 2
    out = {"n": int(len(levels)), "spearman": spearman(pred.proficiency, levels)}
    api = pred.cefr_index
    out |= {"api_cefr_qwk": qwk(truth, api), "api_cefr_exact": float(np.mean(api == truth)),
            "api_cefr_within_one": float(np.mean(np.abs(api - truth) <= 1))}
    if "wi" in getattr(model, "source_cuts", {}):
        level = np.minimum(model.source_level(pred.proficiency, "wi"), 11) // 2
        out |= {"cefr_qwk": qwk(truth, level), "cefr_exact": float(np.mean(level == truth)),
                "cefr_within_one": float(np.mean(np.abs(level - truth) <= 1)),
                "cefr_macro_f1": float(f1_score(truth, level, labels=list(range(6)), average="macro",
                                                zero_division=0))}
        # interval: does the band interval reach the human level's range on the harmonised scale?
        cuts = np.concatenate([[-np.inf], model.source_cuts["wi"], [np.inf]])
        lo, hi = cuts[np.asarray(levels)], cuts[np.asarray(levels) + 1]
        # the interval around the proficiency: W&I texts are not IELTS Task 2 answers, so no length rule
        low, high = pred.band_low - pred.length_adjustment, pred.band_high - pred.length_adjustment
        out["interval_coverage"] = float(np.mean((high + 0.25 >= lo) & (low - 0.25 <= hi)))
        out["interval_mean_width"] = float(np.mean(pred.band_high - pred.band_low))
    else:  # a model that never saw W&I: its API level is all there is
        out |= {"cefr_qwk": out["api_cefr_qwk"], "cefr_exact": out["api_cefr_exact"],
                "cefr_within_one": out["api_cefr_within_one"]}
    if words is not None:
        out["words_spearman"] = spearman(words, levels)
    return out


def split_metrics(model, m, index: np.ndarray, pred) -> dict[str, float]:
    """Per-source metrics on some rows, flattened with a source prefix (``ielts_qwk``, ``wi_spearman``...)."""
    out: dict[str, float] = {"n": int(len(index))}
    for source in ("ielts", "wi"):
        rows = np.flatnonzero(m.source[index] == source)
        if not len(rows):
            continue
        sub = _take(pred, rows)
        words = m.n_words[index][rows]
        figures = ielts_metrics(m.band[index][rows], sub, words) if source == "ielts" else \
            wi_metrics(m.ordinal[index][rows], sub, model, words)
        out |= {f"{source}_{k}": v for k, v in figures.items()}
    return out


def _take(pred, rows: np.ndarray):
    from dataclasses import fields, replace

    return replace(pred, **{f.name: getattr(pred, f.name)[rows] for f in fields(pred)})
