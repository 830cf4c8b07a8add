"""Feature vector (+ embedding) -> latent proficiency -> IELTS band, CEFR level, CEFR probabilities, interval.

One model of one latent scale produces everything a score contains:

- **Latent proficiency** ``eta`` in IELTS band units: a linear part over length-robust signals (it extrapolates
  past the training range) plus a bounded residual of shallow boosted trees, and one explicit, bounded length
  term (log words, clipped to [LENGTH_FLOOR, LENGTH_CEILING]).
- **Sources on one scale.** Training is an ordinal (cumulative-logit) model with per-source cut points: IELTS
  half bands have fixed cut points halfway between bands (so ``eta`` reads as a band), W&I's CEFR sub-levels have
  their own cut points, learned. See :mod:`training.fit`.
- **IELTS band** = ``eta`` + the Task 2 under-length adjustment (IELTS penalises answers under 250 words; a
  fitted, bounded term, reported as ``length_adjustment``), rounded to the half band. Rounding is the median of
  the predicted band distribution, because the IELTS cut points sit halfway between bands.
- **CEFR** = the fixed band -> CEFR table (the API's contract) applied to the proficiency ``eta`` rounded to the
  half band, i.e. before the Task 2 length rule: a short but well-written text keeps its level. From 250 words on
  (no adjustment) band and level always agree; below, the band may sit lower by exactly ``length_adjustment``.
  **CEFR probabilities** = the logistic distribution around ``eta`` summed into CEFR levels by that table, its
  scale calibrated on validation. The reported level is therefore the median of its probabilities, and they fall
  away from it on both sides (one unimodal distribution): the two most likely levels are always neighbours.
- **Interval**: split-conformal, conditional on the predicted band (Mondrian bins), on the half-band grid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from essayscore.artifacts import Artifact, Layout
from essayscore.bands import CEFR_CUTS, CEFR_LEVELS, MAX_BAND, bands_to_cefr_index
from essayscore.features.grammar import GrammarMatch
from essayscore.result import EssayResult

HALF_BANDS = np.arange(3.5, 9.01, 0.5)  # the bands the model can output; 3.5 stands for "4 or below" (see bands.py)
IELTS_CUTS = (HALF_BANDS[:-1] + HALF_BANDS[1:]) / 2  # fixed cut points of the IELTS head: the latent scale is bands
TASK2_MIN_WORDS = 250  # IELTS Task 2 asks for at least 250 words
LENGTH_FLOOR, LENGTH_CEILING = 60, 400  # the length term is flat outside this many words: bounded by design
LENGTH_TERM, UNDER_LENGTH = "length_log_words_bounded", "task2_under_length"


def default_cuts() -> np.ndarray:
    """Plain rounding: the midpoints between neighbouring half bands."""
    return IELTS_CUTS.copy()


def bands_from_raw(raw: np.ndarray, cuts: np.ndarray | None = None) -> np.ndarray:
    cuts = IELTS_CUTS if cuts is None else cuts
    return HALF_BANDS[np.searchsorted(cuts, np.asarray(raw, dtype=np.float64), side="right")]


def length_term(words: np.ndarray) -> np.ndarray:
    """log(words / 250), clipped to the [LENGTH_FLOOR, LENGTH_CEILING] word range."""
    w = np.clip(np.nan_to_num(np.asarray(words, dtype=np.float64), nan=TASK2_MIN_WORDS), LENGTH_FLOOR, LENGTH_CEILING)
    return np.log(w / TASK2_MIN_WORDS)


def under_length(words: np.ndarray) -> np.ndarray:
    """Share of the 250 Task 2 words missing: 0 at 250 words and above, 1 for an empty answer."""
    w = np.nan_to_num(np.asarray(words, dtype=np.float64), nan=TASK2_MIN_WORDS)
    return np.clip(1.0 - w / TASK2_MIN_WORDS, 0.0, 1.0)


def logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def band_distribution(raw: np.ndarray, scale: float) -> np.ndarray:
    """(n, 12) probability of each half band: a logistic distribution around ``raw`` cut at the IELTS cut points."""
    cdf = logistic((IELTS_CUTS[None, :] - np.asarray(raw, dtype=np.float64)[:, None]) / scale)
    cdf = np.hstack([np.zeros((len(cdf), 1)), cdf, np.ones((len(cdf), 1))])
    return np.diff(cdf, axis=1)


_CEFR_OF_HALF_BAND = bands_to_cefr_index(HALF_BANDS)


def cefr_distribution(raw: np.ndarray, scale: float) -> np.ndarray:
    """(n, 6) CEFR probabilities: the band distribution summed by the band -> CEFR table."""
    bands = band_distribution(raw, scale)
    out = np.zeros((len(bands), len(CEFR_LEVELS)))
    for level in range(len(CEFR_LEVELS)):
        out[:, level] = bands[:, _CEFR_OF_HALF_BAND == level].sum(axis=1)
    return out


@dataclass
class Preprocessor:
    """z-scores handcrafted features (NaN kept: the trees route missing values) and projects embeddings."""

    feature_names: list[str]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    embedding_dim: int  # 0: the model uses no embeddings
    pca_mean: np.ndarray | None = None  # None: raw embedding dimensions go to the model
    pca_components: np.ndarray | None = None  # (k, embedding_dim)

    @classmethod
    def fit(cls, feature_names: list[str], handcrafted: np.ndarray, embeddings: np.ndarray | None,
            pca_components: int | None) -> Preprocessor:
        """``pca_components``: None keeps raw embeddings, 0 drops them, k > 0 keeps k principal components."""
        mean = np.nanmean(handcrafted, axis=0)
        std = np.nanstd(handcrafted, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0).astype(np.float32)
        if pca_components == 0 or embeddings is None:
            return cls(list(feature_names), mean, std, 0)
        if pca_components is None:
            return cls(list(feature_names), mean, std, embeddings.shape[1])
        from sklearn.decomposition import PCA

        pca = PCA(n_components=pca_components, random_state=0).fit(embeddings)
        # whitened by hand: unit-variance components, comparable with the z-scored features in the linear part
        scale = np.sqrt(pca.explained_variance_)[:, None]
        return cls(list(feature_names), mean, std, embeddings.shape[1], pca.mean_.astype(np.float32),
                   (pca.components_ / scale).astype(np.float32))

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

    def handcrafted(self, x: np.ndarray) -> np.ndarray:
        """Undo the z-scoring of the handcrafted columns of model input rows: the raw values (FEATURES order)."""
        n = len(self.feature_names)
        return (np.atleast_2d(x)[:, :n] * self.feature_std + self.feature_mean).astype(np.float32)

    def raw_column(self, x: np.ndarray, name: str) -> np.ndarray:
        """Undo the z-scoring of one handcrafted column (the model needs the word count itself)."""
        j = self.feature_names.index(name)
        return np.atleast_2d(x)[:, j].astype(np.float64) * float(self.feature_std[j]) + float(self.feature_mean[j])

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {"feature_names": np.array(self.feature_names), "feature_mean": self.feature_mean,
                  "feature_std": self.feature_std, "embedding_dim": np.array(self.embedding_dim)}
        if self.pca_components is not None:
            arrays |= {"pca_mean": self.pca_mean, "pca_components": self.pca_components}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> Preprocessor:
        data = np.load(path, allow_pickle=False)
        return cls([str(n) for n in data["feature_names"]], data["feature_mean"], data["feature_std"],
                   int(data["embedding_dim"]), data["pca_mean"] if "pca_mean" in data else None,
                   data["pca_components"] if "pca_components" in data else None)


class TreeModels(Protocol):
    """The residual trees behind one interface: XGBoost in-process, or compiled with Treelite."""

    def predict_band(self, x: np.ndarray) -> np.ndarray: ...


class XGBoostTrees:
    def __init__(self, regressor):
        self.regressor = regressor

    @classmethod
    def load(cls, path: Path) -> XGBoostTrees:
        import xgboost as xgb

        regressor = xgb.Booster()
        regressor.load_model(Path(path))
        regressor.set_param({"nthread": 1})  # one request, one core: serving scales with workers
        return cls(regressor)

    def predict_band(self, x: np.ndarray) -> np.ndarray:
        if self.regressor is None:
            return np.zeros(len(np.atleast_2d(x)))
        return np.asarray(self.regressor.inplace_predict(x), dtype=np.float64).reshape(-1)

    def save(self, path: Path) -> None:
        self.regressor.save_model(Path(path))


@dataclass
class LinearPart:
    """``eta_linear = intercept + weights . nan_to_num(x) + length_weight * length_term(words)``."""

    weights: np.ndarray  # one per model feature (0 for features the linear part does not use)
    intercept: float
    length_weight: float

    def __call__(self, x: np.ndarray, words: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(np.atleast_2d(x).astype(np.float64), nan=0.0)
        return self.intercept + x @ self.weights + self.length_weight * length_term(words)


@dataclass
class Predictions:
    raw: np.ndarray  # continuous IELTS band: proficiency + under-length adjustment
    band: np.ndarray  # half band (the median of the band distribution)
    band_low: np.ndarray  # conformal interval, in half bands
    band_high: np.ndarray
    cefr_index: np.ndarray  # CEFR level of the proficiency's half band (the fixed table)
    probabilities: np.ndarray  # (n, 6) calibrated CEFR probabilities, A1..C2
    proficiency: np.ndarray  # latent proficiency before the Task 2 length adjustment, in band units
    length_adjustment: np.ndarray  # band points the under-length rule takes off (<= 0)

    @property
    def cefr(self) -> list[str]:
        return [CEFR_LEVELS[i] for i in self.cefr_index]

    def result(self, i: int, model_version: str, x: np.ndarray, handcrafted: np.ndarray,
               matches: Sequence[GrammarMatch] = ()) -> EssayResult:
        """Row ``i`` as the typed result; ``x`` and ``handcrafted`` are that row's model input and raw values."""
        return EssayResult(
            ielts_band=float(self.band[i]), ielts_raw=float(self.raw[i]),
            band_interval=(float(self.band_low[i]), float(self.band_high[i])),
            cefr=CEFR_LEVELS[int(self.cefr_index[i])],
            cefr_probabilities={lvl: float(p) for lvl, p in zip(CEFR_LEVELS, self.probabilities[i])},
            length_adjustment=float(self.length_adjustment[i]), model_version=model_version,
            feature_vector=np.asarray(x, dtype=np.float32).reshape(-1),
            handcrafted=np.asarray(handcrafted, dtype=np.float32).reshape(-1), matches=tuple(matches))


@dataclass
class ScoringModel:
    preprocessor: Preprocessor
    trees: TreeModels
    linear: LinearPart
    under_length_weight: float = 0.0  # band points lost by an empty answer (<= 0); scaled by the missing share
    scale: float = 0.5  # logistic scale of the band distribution (calibrated on validation)
    # Mondrian conformal: residual quantile per predicted-band bin; bins split at ``conformal_edges``
    conformal_edges: list[float] = field(default_factory=lambda: [5.25, 6.75])
    conformal_quantiles: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    interval_level: float = 0.9
    source_cuts: dict[str, list[float]] = field(default_factory=dict)  # learned cut points of the other sources
    source_scales: dict[str, float] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return self.preprocessor.output_names

    def transform(self, handcrafted: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        return self.preprocessor.transform(handcrafted, embeddings)

    def words(self, x: np.ndarray) -> np.ndarray:
        return self.preprocessor.raw_column(x, "word_count")

    def proficiency(self, x: np.ndarray, tree_margin: np.ndarray | None = None) -> np.ndarray:
        margin = self.trees.predict_band(x) if tree_margin is None else np.asarray(tree_margin, dtype=np.float64)
        return self.linear(x, self.words(x)) + margin.reshape(-1)

    def length_adjustment(self, x: np.ndarray) -> np.ndarray:
        """The Task 2 under-length adjustment of each row (band points, <= 0)."""
        return self.under_length_weight * under_length(self.words(np.atleast_2d(x))) + 0.0  # + 0.0: never -0.0

    def predict(self, x: np.ndarray) -> Predictions:
        return self.finish(self.trees.predict_band(x), x)

    def finish(self, tree_margin: np.ndarray, x: np.ndarray) -> Predictions:
        """Residual-tree output + model input rows -> everything a score reports (shared by every runtime, so
        the embedded path, the batch CLI and the Triton postprocess step agree)."""
        x = np.atleast_2d(x)
        eta = self.proficiency(x, tree_margin)
        adjustment = self.length_adjustment(x)
        raw = np.clip(eta + adjustment, 0.0, MAX_BAND)
        band = bands_from_raw(raw)
        q = np.asarray(self.conformal_quantiles)[np.searchsorted(self.conformal_edges, band, side="right")]
        # True bands lie on the half-band grid, so rounding the conformal interval inwards onto that grid keeps
        # exactly the bands it covered (and its coverage guarantee) while making it as narrow as possible.
        # ... and onto the bands the model can report (3.5, "4 or below", is the lowest)
        low = np.clip(np.ceil((raw - q) * 2 - 1e-9) / 2, HALF_BANDS[0], MAX_BAND)
        high = np.clip(np.floor((raw + q) * 2 + 1e-9) / 2, HALF_BANDS[0], MAX_BAND)
        low, high = np.minimum(low, band), np.maximum(high, band)
        level_of = np.clip(eta, 0.0, MAX_BAND)
        return Predictions(raw, band, low, high, bands_to_cefr_index(bands_from_raw(level_of)),
                           cefr_distribution(level_of, self.scale), eta, adjustment)

    def source_level(self, eta: np.ndarray, source: str) -> np.ndarray:
        """The ordinal level of ``source``'s own scale that ``eta`` falls in (evaluation on that source)."""
        return np.searchsorted(np.asarray(self.source_cuts[source]), eta, side="right")

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.preprocessor.save(directory / Layout.PREPROCESSOR)
        if getattr(self.trees, "regressor", None) is not None:
            cast(XGBoostTrees, self.trees).save(directory / Layout.TREES)  # the trees that have a regressor to save
        (directory / Layout.SCORING).write_text(json.dumps({
            "latent_scale": "IELTS band units (IELTS cut points fixed halfway between half bands)",
            "linear_weights": [float(w) for w in self.linear.weights],
            "linear_intercept": float(self.linear.intercept),
            "length_weight": float(self.linear.length_weight),
            "length_words_range": [LENGTH_FLOOR, LENGTH_CEILING],
            "under_length_weight": float(self.under_length_weight),
            "task2_min_words": TASK2_MIN_WORDS,
            "scale": float(self.scale),
            "half_bands": [float(b) for b in HALF_BANDS],
            "ielts_cuts": [float(c) for c in IELTS_CUTS],
            "cefr_cuts": list(CEFR_CUTS),
            "conformal_edges": [float(e) for e in self.conformal_edges],
            "conformal_quantiles": [float(q) for q in self.conformal_quantiles],
            "interval_level": float(self.interval_level),
            "source_cuts": {k: [float(c) for c in v] for k, v in self.source_cuts.items()},
            "source_scales": {k: float(v) for k, v in self.source_scales.items()},
            "has_trees": getattr(self.trees, "regressor", None) is not None,
            "cefr_levels": list(CEFR_LEVELS),
            "feature_names": self.feature_names,
        }, indent=2))

    @classmethod
    def load(cls, artifact: Artifact | Path, trees: TreeModels | None = None) -> ScoringModel:
        """From an artifact (a folder is opened, and so verified); ``trees`` replaces its XGBoost trees."""
        artifact = Artifact.of(artifact)
        s = artifact.scoring
        if trees is None:
            trees = XGBoostTrees.load(artifact.path(Layout.TREES)) if s["has_trees"] else XGBoostTrees(None)
        return cls(Preprocessor.load(artifact.path(Layout.PREPROCESSOR)), trees,
                   LinearPart(np.asarray(s["linear_weights"]), s["linear_intercept"], s["length_weight"]),
                   s["under_length_weight"], s["scale"], s["conformal_edges"], s["conformal_quantiles"],
                   s["interval_level"], s["source_cuts"], s["source_scales"])
