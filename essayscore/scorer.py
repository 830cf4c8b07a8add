"""Feature vector + embedding -> IELTS band, CEFR probabilities and a band interval.

The model is a preprocessor (z-scored handcrafted features, embeddings optionally reduced by PCA), an XGBoost
regressor for the band and an XGBoost classifier for CEFR, plus what was fitted on the validation split:
half-band cut points tuned for QWK, a softmax temperature that calibrates the classifier, and the split-conformal
residual quantile behind the band interval. Training builds a :class:`ScoringModel`; serving loads one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from essayscore.bands import CEFR_LEVELS, MAX_BAND, band_to_cefr, bands_to_cefr_index

HALF_BANDS = np.arange(3.5, 9.01, 0.5)  # the bands the model can output; 3.5 stands for "4 or below" (see bands.py)
REGRESSOR_FILE, CLASSIFIER_FILE = "regressor.json", "classifier.json"
PREPROCESSOR_FILE, SCORING_FILE = "preprocessor.npz", "scoring.json"


def default_cuts() -> np.ndarray:
    """Plain rounding: the midpoints between neighbouring half bands."""
    return (HALF_BANDS[:-1] + HALF_BANDS[1:]) / 2


def bands_from_raw(raw: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    return HALF_BANDS[np.searchsorted(cuts, np.asarray(raw, dtype=np.float64), side="right")]


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling: softmax(log p / T). T > 1 softens over-confident trees; T = 1 is the identity."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


@dataclass
class Preprocessor:
    """z-scores handcrafted features (NaN kept: the trees route missing values) and projects embeddings."""

    feature_names: list[str]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    embedding_dim: int  # 0: the model uses no embeddings
    pca_mean: np.ndarray | None = None  # None: raw embedding dimensions go to the trees
    pca_components: np.ndarray | None = None  # (k, embedding_dim)

    @classmethod
    def fit(cls, feature_names: list[str], handcrafted: np.ndarray, embeddings: np.ndarray,
            pca_components: int | None) -> "Preprocessor":
        """``pca_components``: None keeps raw embeddings, 0 drops them, k > 0 keeps k principal components."""
        mean = np.nanmean(handcrafted, axis=0)
        std = np.nanstd(handcrafted, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0).astype(np.float32)
        if pca_components == 0:
            return cls(list(feature_names), mean, std, 0)
        if pca_components is None:
            return cls(list(feature_names), mean, std, embeddings.shape[1])
        from sklearn.decomposition import PCA

        pca = PCA(n_components=pca_components, random_state=0).fit(embeddings)
        return cls(list(feature_names), mean, std, embeddings.shape[1], pca.mean_.astype(np.float32),
                   pca.components_.astype(np.float32))

    @property
    def embedding_names(self) -> list[str]:
        if self.pca_components is not None:
            return [f"embedding_pc{i + 1}" for i in range(len(self.pca_components))]
        return [f"embedding_{i}" for i in range(self.embedding_dim)]

    @property
    def output_names(self) -> list[str]:
        return list(self.feature_names) + self.embedding_names

    def transform(self, handcrafted: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        handcrafted = np.atleast_2d(np.asarray(handcrafted, dtype=np.float32))
        scaled = (handcrafted - self.feature_mean) / self.feature_std
        if not self.embedding_dim:
            return scaled.astype(np.float32)
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if self.pca_components is not None:
            embeddings = (embeddings - self.pca_mean) @ self.pca_components.T
        return np.hstack([scaled, embeddings]).astype(np.float32)

    def save(self, path: Path) -> None:
        arrays = {"feature_names": np.array(self.feature_names), "feature_mean": self.feature_mean,
                  "feature_std": self.feature_std, "embedding_dim": np.array(self.embedding_dim)}
        if self.pca_components is not None:
            arrays |= {"pca_mean": self.pca_mean, "pca_components": self.pca_components}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> "Preprocessor":
        data = np.load(path, allow_pickle=False)
        return cls([str(n) for n in data["feature_names"]], data["feature_mean"], data["feature_std"],
                   int(data["embedding_dim"]), data["pca_mean"] if "pca_mean" in data else None,
                   data["pca_components"] if "pca_components" in data else None)


class TreeModels(Protocol):
    """The two tree ensembles behind one interface: XGBoost in-process, or compiled with Treelite."""

    def predict_band(self, x: np.ndarray) -> np.ndarray: ...
    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


class XGBoostTrees:
    def __init__(self, regressor, classifier):
        self.regressor, self.classifier = regressor, classifier

    @classmethod
    def load(cls, directory: Path) -> "XGBoostTrees":
        import xgboost as xgb

        regressor, classifier = xgb.Booster(), xgb.Booster()
        regressor.load_model(Path(directory) / REGRESSOR_FILE)
        classifier.load_model(Path(directory) / CLASSIFIER_FILE)
        for booster in (regressor, classifier):
            booster.set_param({"nthread": 1})  # one request, one core: serving scales with workers
        return cls(regressor, classifier)

    def predict_band(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.regressor.inplace_predict(x), dtype=np.float64).reshape(-1)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.classifier.inplace_predict(x), dtype=np.float64).reshape(len(x), len(CEFR_LEVELS))

    def save(self, directory: Path) -> None:
        self.regressor.save_model(Path(directory) / REGRESSOR_FILE)
        self.classifier.save_model(Path(directory) / CLASSIFIER_FILE)


@dataclass
class Predictions:
    raw: np.ndarray  # regressor output (continuous band)
    band: np.ndarray  # half band from the tuned cut points
    band_low: np.ndarray  # conformal interval, in half bands
    band_high: np.ndarray
    cefr_index: np.ndarray  # CEFR level of ``band`` (the fixed band -> CEFR mapping keeps band and level consistent)
    probabilities: np.ndarray  # (n, 6) calibrated classifier probabilities, A1..C2

    @property
    def cefr(self) -> list[str]:
        return [CEFR_LEVELS[i] for i in self.cefr_index]

    def row(self, i: int) -> dict:
        return {
            "ielts_band": float(self.band[i]),
            "ielts_raw": float(self.raw[i]),
            "band_interval": [float(self.band_low[i]), float(self.band_high[i])],
            "cefr": band_to_cefr(float(self.band[i])),
            "cefr_probabilities": {lvl: float(p) for lvl, p in zip(CEFR_LEVELS, self.probabilities[i])},
        }


@dataclass
class ScoringModel:
    preprocessor: Preprocessor
    trees: TreeModels
    cuts: np.ndarray = field(default_factory=default_cuts)
    temperature: float = 1.0
    conformal_quantile: float = 0.5  # |band - raw| quantile at ``interval_level`` on validation
    interval_level: float = 0.9

    @property
    def feature_names(self) -> list[str]:
        return self.preprocessor.output_names

    def transform(self, handcrafted: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return self.preprocessor.transform(handcrafted, embeddings)

    def predict(self, x: np.ndarray) -> Predictions:
        raw = self.trees.predict_band(x)
        return self.finish(raw, calibrate(self.trees.predict_proba(x), self.temperature))

    def finish(self, raw: np.ndarray, probabilities: np.ndarray) -> Predictions:
        """Calibrated tree outputs -> bands, interval and CEFR (shared by every runtime, so they agree)."""
        band = bands_from_raw(raw, self.cuts)
        # True bands lie on the half-band grid, so rounding the conformal interval inwards onto that grid keeps
        # exactly the bands it covered (and its coverage guarantee) while making it as narrow as possible.
        low = np.clip(np.ceil((raw - self.conformal_quantile) * 2 - 1e-9) / 2, 0.0, MAX_BAND)
        high = np.clip(np.floor((raw + self.conformal_quantile) * 2 + 1e-9) / 2, 0.0, MAX_BAND)
        low, high = np.minimum(low, band), np.maximum(high, band)
        return Predictions(raw, band, low, high, bands_to_cefr_index(band), probabilities)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.preprocessor.save(directory / PREPROCESSOR_FILE)
        self.trees.save(directory)
        (directory / SCORING_FILE).write_text(json.dumps({
            "cuts": [float(c) for c in self.cuts],
            "half_bands": [float(b) for b in HALF_BANDS],
            "temperature": float(self.temperature),
            "conformal_quantile": float(self.conformal_quantile),
            "interval_level": float(self.interval_level),
            "cefr_levels": list(CEFR_LEVELS),
            "feature_names": self.feature_names,
        }, indent=2))

    @classmethod
    def load(cls, directory: Path, trees: TreeModels | None = None) -> "ScoringModel":
        directory = Path(directory)
        scoring = json.loads((directory / SCORING_FILE).read_text())
        return cls(Preprocessor.load(directory / PREPROCESSOR_FILE), trees or XGBoostTrees.load(directory),
                   np.asarray(scoring["cuts"]), scoring["temperature"], scoring["conformal_quantile"],
                   scoring["interval_level"])
