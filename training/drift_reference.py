"""The drift reference training stores in every artifact (``Layout.DRIFT_REFERENCE``, read by
:mod:`essayscore.monitoring`): what live traffic is compared with.

- **Population: the IELTS rows.** The service scores IELTS Task 2 essays; the W&I learner texts (letters, stories,
  much shorter) teach the model the low end of the scale, they are not the traffic it expects. Against a mixture
  of both, ordinary IELTS traffic would itself look drifted. A model trained without IELTS rows uses all rows.
- **Features: the train split.** Feature values do not depend on the model, so the largest split describes them
  best: decile bins of every handcrafted feature, and a value sample of the monitored ones for the KS test.
- **Monitored features: the model's most important handcrafted ones**, by mean |SHAP| (exact: linear part plus
  TreeSHAP of the trees, as the explanations compute it) over those rows: per model, not a fixed list.
- **Outputs: predictions on the held-out splits (validation and test).** Live essays are unseen; predictions on
  the rows the model was fitted on are optimistic (pulled towards their labels, so spread wider). Validation only
  steered early stopping and the band distribution's scale, which does not move the half band, and the test split
  is never looked at in training: both read as unseen, and together they double the rows (a band distribution
  over ~12 half bands needs them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from essayscore.artifacts import Artifact
from essayscore.bands import CEFR_LEVELS
from essayscore.explain import Explainer
from essayscore.monitoring import BAND, CEFR, N_BINS, REFERENCE_FORMAT, Bins
from essayscore.scoring_model import ScoringModel
from training.fit import predict_rows
from training.matrices import Matrices

N_MONITORED = 10
SAMPLE_SIZE = 1000  # reference values kept per monitored quantity for the KS test
REFERENCE_SOURCE = "ielts"


def _population(m: Matrices, splits: pd.DataFrame, names: tuple[str, ...]) -> tuple[np.ndarray, str]:
    rows = np.flatnonzero(splits["split"].isin(names).to_numpy())
    ielts = rows[m.source[rows] == REFERENCE_SOURCE]
    if len(ielts):
        return ielts, f"{REFERENCE_SOURCE} rows of the {' + '.join(names)} split"
    return rows, f"all rows of the {' + '.join(names)} split (no {REFERENCE_SOURCE} rows)"


def _sample(values: np.ndarray, size: int = SAMPLE_SIZE) -> list[float]:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) > size:  # deterministic: the same artifact inputs give the same reference
        finite = np.random.default_rng(0).choice(finite, size, replace=False)
    return [round(float(v), 6) for v in finite]


def _category(output: str, value: float) -> str:
    return CEFR_LEVELS[int(value)] if output == CEFR else f"{value:g}"


def feature_importance(artifact: Artifact, model: ScoringModel, m: Matrices, rows: np.ndarray) -> dict[str, float]:
    """Mean |SHAP| of each handcrafted feature over ``rows`` (``word_count`` carries the length terms)."""
    hand, emb, _ = m.rows(rows, None, model.preprocessor.embedding_dim > 0)
    contributions, _, _ = Explainer(artifact, model).contributions(model.transform(hand, emb))
    mean_abs = np.abs(contributions).mean(axis=0)
    model_features = model.feature_names
    return {name: float(mean_abs[model_features.index(name)]) for name in m.feature_names if name in model_features}


def build(artifact: Artifact, model: ScoringModel, m: Matrices, splits: pd.DataFrame,
          n_monitored: int = N_MONITORED) -> dict:
    """The reference as JSON. ``artifact``: the folder being written (its registry and scoring files are on disk:
    the explainer reads them)."""
    train_rows, train_population = _population(m, splits, ("train",))
    held_rows, held_population = _population(m, splits, ("validation", "test"))
    importance = feature_importance(artifact, model, m, train_rows)
    ranked = sorted((name for name, value in importance.items() if value > 0), key=lambda n: -importance[n])
    monitored = ranked[:n_monitored]
    features = {}
    for j, name in enumerate(m.feature_names):
        column = m.handcrafted[train_rows, j].astype(np.float64)
        features[name] = {**Bins.from_values(column).to_dict(), "n": len(column),
                          "importance": importance.get(name)}
    predicted = predict_rows(model, m, held_rows)
    outputs = {BAND: np.asarray(predicted.band, dtype=np.float64),
               CEFR: np.asarray(predicted.cefr_index, dtype=np.float64)}
    samples = {name: _sample(m.handcrafted[train_rows, m.feature_names.index(name)]) for name in monitored}
    samples |= {name: _sample(values) for name, values in outputs.items()}
    return {
        "format": REFERENCE_FORMAT,
        "bins": f"deciles (at most {N_BINS} bins; tied edges merged), right-closed like Prometheus' le buckets, "
                "plus a missing-value share",
        "population": {"features": train_population, "feature_rows": len(train_rows),
                       "outputs": held_population, "output_rows": len(held_rows),
                       "importance": "mean |SHAP| over the feature rows"},
        "monitored": monitored,
        "features": features,
        "outputs": {name: {**Bins.from_values(values).to_dict(), "n": len(values),
                           "distribution": {_category(name, v): float(np.mean(values == v)) for v in np.unique(values)}}
                    for name, values in outputs.items()},
        "samples": samples,
    }
