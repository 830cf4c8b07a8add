"""SHAP explanations of the band, additive by construction: ``base_value + sum(contributions) == ielts_raw``.

The band is ``intercept + linear part + residual trees + length term + Task 2 under-length adjustment``:

- linear part: the exact SHAP value of a linear model against the training mean (features are z-scored, so the
  mean is 0): ``weight * x``;
- residual trees: XGBoost's native ``pred_contribs`` (exact TreeSHAP, measured equal to ``shap.TreeExplainer``);
- the length term and the under-length adjustment: their own value, reported on ``word_count`` (the one length
  signal the model reads), with the under-length adjustment also shown on its own.

Contributions are summed per feature and per feature group (every embedding dimension in "semantic_content").
The reference (``base_value``) is the training mean of every z-scored signal at 250 words. A score beyond the
0-9 band scale is clipped, and the clipped amount is reported as its own group (``scale_limit``), so the groups
always add up to ``ielts_raw``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from essayscore.artifacts import Artifact
from essayscore.bands import MAX_BAND, MIN_BAND
from essayscore.scoring_model import ScoringModel, length_term

SEMANTIC_GROUP = "semantic_content"
SCALE_LIMIT_GROUP = "scale_limit"  # what clipping to the 0-9 band scale removed (only for an off-scale score)
LENGTH_GROUP = "length_structure"


class Explainer:
    def __init__(self, artifact: Artifact | Path, model: ScoringModel | None = None):
        artifact = Artifact.of(artifact)
        self.model = model or artifact.scoring_model()
        self.booster = getattr(self.model.trees, "regressor", None)
        self.model_features: list[str] = artifact.scoring["feature_names"]
        self.registry = {entry["name"]: entry for entry in artifact.registry}
        self.groups = [self.registry[n]["group"] if n in self.registry else SEMANTIC_GROUP for n in self.model_features]
        self.word_index = self.model_features.index("word_count")

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(per-feature contributions (n, M), base values (n,), under-length adjustment (n,)) for rows ``x``."""
        x = np.atleast_2d(x).astype(np.float32)
        linear = self.model.linear
        values = np.nan_to_num(x.astype(np.float64), nan=0.0) * linear.weights[None, :]
        base = np.full(len(x), linear.intercept)
        if self.booster is not None:
            tree, tree_base = self.tree_contributions(x)
            values += tree
            base += tree_base
        values[:, self.word_index] += linear.length_weight * length_term(self.model.words(x))
        adjustment = self.model.length_adjustment(x)
        values[:, self.word_index] += adjustment
        return values, base, adjustment

    def tree_contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TreeSHAP of the residual trees alone: (n, M) values and (n,) base values."""
        import xgboost as xgb

        assert self.booster is not None  # contributions() calls this only when there are trees
        values = self.booster.predict(xgb.DMatrix(np.atleast_2d(x).astype(np.float32)), pred_contribs=True)
        return values[:, :-1], values[:, -1]

    def explain(self, x: np.ndarray, handcrafted: np.ndarray, top_k: int = 8) -> list[dict]:
        contributions, base, adjustment = self.contributions(x)
        handcrafted = np.atleast_2d(handcrafted)
        return [self._one(c, b, a, h, top_k) for c, b, a, h in zip(contributions, base, adjustment, handcrafted)]

    def _one(self, contributions: np.ndarray, base: float, adjustment: float, handcrafted: np.ndarray,
             top_k: int) -> dict:
        grouped: dict[str, float] = {}
        for group, value in zip(self.groups, contributions):
            grouped[group] = grouped.get(group, 0.0) + float(value)
        unclipped = float(base + contributions.sum())
        clipped = min(max(unclipped, MIN_BAND), MAX_BAND)
        if clipped != unclipped:  # the band scale ends at 0 and 9: the rest is cut off, visibly
            grouped[SCALE_LIMIT_GROUP] = clipped - unclipped
        named = [i for i, g in enumerate(self.groups) if g != SEMANTIC_GROUP]
        top = sorted(named, key=lambda i: -abs(contributions[i]))[:top_k]
        return {
            "base_value": float(base),
            "output": clipped,
            # the IELTS Task 2 rule (under 250 words), already inside word_count's contribution above
            "length_adjustment": float(adjustment),
            "top_features": [{
                "name": self.model_features[i],
                "description": self.registry[self.model_features[i]]["description"],
                "group": self.groups[i],
                "value": None if not np.isfinite(handcrafted[i]) else float(handcrafted[i]),
                "contribution": float(contributions[i]),
                "direction": "raises" if contributions[i] > 0 else "lowers",
            } for i in top if contributions[i] != 0],
            "groups": dict(sorted(grouped.items(), key=lambda kv: -abs(kv[1]))),
        }
