"""SHAP explanations of the band regressor, additive by construction.

XGBoost's native ``pred_contribs`` computes exact TreeSHAP (the same values as ``shap.TreeExplainer``, measured
equal here) without the shap package's overhead, so it is the one used. For each essay:
``base_value + sum(contributions) == ielts_raw``. Contributions are reported per handcrafted feature (readable
name, direction, the essay's raw value) and summed per feature group, with every embedding dimension in one
"semantic_content" group.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from essayscore.scorer import REGRESSOR_FILE, SCORING_FILE

SEMANTIC_GROUP = "semantic_content"


class Explainer:
    def __init__(self, artifact_dir: Path):
        import xgboost as xgb

        artifact_dir = Path(artifact_dir)
        self.booster = xgb.Booster()
        self.booster.load_model(artifact_dir / REGRESSOR_FILE)
        self.booster.set_param({"nthread": 1})
        self.model_features: list[str] = json.loads((artifact_dir / SCORING_FILE).read_text())["feature_names"]
        registry = json.loads((artifact_dir / "feature_registry.json").read_text())
        self.registry = {entry["name"]: entry for entry in registry}
        self.groups = [self.registry[n]["group"] if n in self.registry else SEMANTIC_GROUP for n in self.model_features]

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-feature SHAP values (n, M), base values (n,)) for model input rows ``x``."""
        import xgboost as xgb

        values = self.booster.predict(xgb.DMatrix(np.atleast_2d(x).astype(np.float32)), pred_contribs=True)
        return values[:, :-1], values[:, -1]

    def explain(self, x: np.ndarray, handcrafted: np.ndarray, top_k: int = 8) -> list[dict]:
        contributions, base = self.contributions(x)
        handcrafted = np.atleast_2d(handcrafted)
        return [self._one(c, b, h, top_k) for c, b, h in zip(contributions, base, handcrafted)]

    def _one(self, contributions: np.ndarray, base: float, handcrafted: np.ndarray, top_k: int) -> dict:
        grouped: dict[str, float] = {}
        for group, value in zip(self.groups, contributions):
            grouped[group] = grouped.get(group, 0.0) + float(value)
        named = [i for i, g in enumerate(self.groups) if g != SEMANTIC_GROUP]
        top = sorted(named, key=lambda i: -abs(contributions[i]))[:top_k]
        return {
            "base_value": float(base),
            "output": float(base + contributions.sum()),
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
