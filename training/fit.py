"""Fit one scoring model on a train / validation split: preprocessor, XGBoost regressor and classifier with
early stopping on validation, then the validation-fitted pieces (QWK-tuned half-band cuts, temperature, conformal
quantile). Used for the final model, the cross-validation folds, the baselines and the ablations alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import xgboost as xgb
from scipy.optimize import minimize_scalar

from essayscore.bands import CEFR_LEVELS, bands_to_cefr_index, half_band_index
from essayscore.scorer import (HALF_BANDS, Preprocessor, ScoringModel, XGBoostTrees, bands_from_raw, calibrate,
                               default_cuts)
from training.metrics import qwk


@dataclass
class TreeConfig:
    """XGBoost settings. Tree counts are capped so tl2cgen compiles both models within CI's budget and SHAP via
    pred_contribs stays in the tens of milliseconds per essay."""

    max_rounds: int = 400  # regressor trees at most; early stopping usually ends far sooner
    classifier_max_rounds: int = 60  # x6 classes = at most 360 trees
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.5
    min_child_weight: float = 3.0
    reg_lambda: float = 2.0
    early_stopping_rounds: int = 40
    nthread: int = 2
    seed: int = 0


@dataclass
class Matrices:
    """Everything the model sees for every essay, in data order."""

    feature_names: list[str]
    handcrafted: np.ndarray  # (n, F) float32, NaN allowed
    embeddings: np.ndarray  # (n, D) float32
    band: np.ndarray  # (n,) float, censored rows at the surrogate

    def rows(self, index: np.ndarray, features: list[int] | None = None, use_embeddings: bool = True):
        hand = self.handcrafted[index] if features is None else self.handcrafted[index][:, features]
        return hand, (self.embeddings[index] if use_embeddings else None), self.band[index]


def _params(cfg: TreeConfig, **extra) -> dict:
    return {"max_depth": cfg.max_depth, "eta": cfg.learning_rate, "subsample": cfg.subsample,
            "colsample_bytree": cfg.colsample_bytree, "min_child_weight": cfg.min_child_weight,
            "lambda": cfg.reg_lambda, "nthread": cfg.nthread, "seed": cfg.seed, "tree_method": "hist", **extra}


def _train(params: dict, x_train, y_train, x_val, y_val, rounds: int, patience: int) -> xgb.Booster:
    train, val = xgb.DMatrix(x_train, label=y_train), xgb.DMatrix(x_val, label=y_val)
    booster = xgb.train(params, train, num_boost_round=rounds, evals=[(val, "validation")],
                        early_stopping_rounds=patience, verbose_eval=False)
    return booster[: booster.best_iteration + 1]  # keep only the trees early stopping chose


def tune_cuts(y: np.ndarray, raw: np.ndarray, passes: int = 3, max_shift: float = 0.5) -> np.ndarray:
    """Coordinate ascent on validation QWK over the half-band cut points, each within +-max_shift of its
    midpoint and kept strictly increasing. Starting from plain rounding, a cut moves only when QWK improves."""
    cuts = default_cuts()
    truth = half_band_index(y)
    best = qwk(truth, half_band_index(bands_from_raw(raw, cuts)))
    for _ in range(passes):
        for i, mid in enumerate(default_cuts()):
            low = max(mid - max_shift, cuts[i - 1] + 0.01 if i else -np.inf)
            high = min(mid + max_shift, cuts[i + 1] - 0.01 if i + 1 < len(cuts) else np.inf)
            for candidate in np.arange(low, high + 1e-9, 0.025):
                trial = cuts.copy()
                trial[i] = candidate
                score = qwk(truth, half_band_index(bands_from_raw(raw, trial)))
                if score > best + 1e-9:
                    best, cuts = score, trial
    return cuts


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature minimising validation log loss."""
    def nll(log_t: float) -> float:
        p = calibrate(probabilities, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1))))

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.2), np.log(10.0)), method="bounded").x))


def conformal_quantile(y: np.ndarray, raw: np.ndarray, level: float) -> float:
    """Split-conformal: the ceil((n+1) level)/n empirical quantile of validation |residuals|."""
    residuals = np.abs(np.asarray(y) - np.asarray(raw))
    q = min(1.0, np.ceil((len(residuals) + 1) * level) / len(residuals))
    return float(np.quantile(residuals, q, method="higher"))


def fit_scoring_model(m: Matrices, train: np.ndarray, val: np.ndarray, pca_components: int | None,
                      cfg: TreeConfig = TreeConfig(), features: list[int] | None = None,
                      interval_level: float = 0.9) -> ScoringModel:
    """``features`` selects handcrafted columns (baselines, ablations); ``pca_components`` as in Preprocessor.fit."""
    names = m.feature_names if features is None else [m.feature_names[i] for i in features]
    use_embeddings = pca_components != 0
    hand_tr, emb_tr, y_tr = m.rows(train, features, use_embeddings)
    hand_va, emb_va, y_va = m.rows(val, features, use_embeddings)
    pre = Preprocessor.fit(names, hand_tr, emb_tr, pca_components)
    x_tr, x_va = pre.transform(hand_tr, emb_tr), pre.transform(hand_va, emb_va)

    regressor = _train(_params(cfg, objective="reg:squarederror", eval_metric="rmse"),
                       x_tr, y_tr, x_va, y_va, cfg.max_rounds, cfg.early_stopping_rounds)
    c_tr, c_va = bands_to_cefr_index(y_tr), bands_to_cefr_index(y_va)
    classifier = _train(_params(cfg, objective="multi:softprob", num_class=len(CEFR_LEVELS), eval_metric="mlogloss"),
                        x_tr, c_tr, x_va, c_va, cfg.classifier_max_rounds, cfg.early_stopping_rounds)
    trees = XGBoostTrees(regressor, classifier)

    raw_va = trees.predict_band(x_va)
    return ScoringModel(
        preprocessor=pre,
        trees=trees,
        cuts=tune_cuts(y_va, raw_va),
        temperature=fit_temperature(trees.predict_proba(x_va), c_va),
        conformal_quantile=conformal_quantile(y_va, raw_va, interval_level),
        interval_level=interval_level,
    )


def predict_rows(model: ScoringModel, m: Matrices, index: np.ndarray, features: list[int] | None = None):
    hand, emb, _ = m.rows(index, features, model.preprocessor.embedding_dim > 0)
    return model.predict(model.transform(hand, emb))


__all__ = ["HALF_BANDS", "Matrices", "TreeConfig", "asdict", "conformal_quantile", "fit_scoring_model",
           "fit_temperature", "predict_rows", "tune_cuts"]
