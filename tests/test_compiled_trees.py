"""Treelite + TL2cgen compiled XGBoost models predict exactly what XGBoost predicts (NaN = missing)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
pytest.importorskip("treelite")
pytest.importorskip("tl2cgen")

from essayscore.compiled_trees import CompiledTrees, compile_xgboost

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the shared library")

N_FEATURES = 450  # ~60 handcrafted + 384 embedding dims, like production
ATOL = 1e-5


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    X[:, :60] = rng.gamma(2.0, 2.0, size=(n, 60))  # handcrafted-like, positive and skewed
    X[rng.random((n, N_FEATURES)) < 0.03] = np.nan  # scattered missing values
    X[: n // 10, :60] = np.nan  # rows whose whole handcrafted block is missing
    signal = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) + 2 * np.nan_to_num(X[:, 100]) + np.nan_to_num(X[:, 300])
    return X, signal + rng.normal(scale=0.5, size=n)


@pytest.fixture(scope="module")
def data():
    X, y = _data(1200)
    X_test, _ = _data(300, seed=1)
    X_test[0] = np.nan  # an all-missing row
    X_test[1, ::2] = np.nan
    return X, y, X_test


def _check(model_file: Path, out_dir: Path, name: str, X_test: np.ndarray, expected: np.ndarray) -> CompiledTrees:
    t0 = time.perf_counter()
    lib = compile_xgboost(model_file, out_dir, name, nthread=2)
    assert lib.is_file() and lib.suffix == ".so"
    compiled = CompiledTrees(lib)
    assert compiled.compile_s is not None and compiled.compile_s <= time.perf_counter() - t0
    got = compiled.predict(X_test)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    # single rows (the serving path) and 1-D input
    np.testing.assert_allclose(compiled.predict(X_test[1]), expected[1:2], rtol=0, atol=ATOL)
    nan_rows = np.isnan(X_test).any(axis=1)
    assert nan_rows.sum() > 10
    return compiled


# max_bin=64 keeps training fast (the 6-class model takes ~35 s at the default 256 bins on 2 cores).
@pytest.fixture(scope="module")
def regressor(data):
    X, y, _ = data
    return xgb.XGBRegressor(
        n_estimators=50, max_depth=4, learning_rate=0.1, objective="reg:squarederror", max_bin=64, n_jobs=2,
        random_state=0,
    ).fit(X, y)


@pytest.fixture(scope="module")
def classifier(data):
    X, y, _ = data
    labels = np.digitize(y, np.quantile(y, [0.1, 0.3, 0.5, 0.7, 0.9]))  # 6 classes, like CEFR A1..C2
    assert set(labels) == set(range(6))
    return xgb.XGBClassifier(
        n_estimators=30, max_depth=4, learning_rate=0.2, objective="multi:softprob", max_bin=64, n_jobs=2,
        random_state=0,
    ).fit(X, labels)


@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_regressor_matches_xgboost(tmp_path: Path, data, regressor, fmt: str) -> None:
    _, _, X_test = data
    model = regressor
    model_file = tmp_path / f"reg.{fmt}"
    model.save_model(model_file)
    booster = xgb.Booster(model_file=str(model_file))
    expected = booster.inplace_predict(X_test)
    np.testing.assert_allclose(expected, model.predict(X_test), rtol=0, atol=1e-6)
    compiled = _check(model_file, tmp_path / "out", f"reg_{fmt}", X_test, expected)
    assert expected.shape == (len(X_test),)
    assert compiled.objective == "reg:squarederror" and compiled.num_feature == N_FEATURES
    # margin output equals XGBoost's margin too (identity link here)
    np.testing.assert_allclose(
        compiled.predict(X_test, output_margin=True),
        booster.inplace_predict(X_test, predict_type="margin"),
        rtol=0,
        atol=ATOL,
    )


@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_softprob_classifier_matches_xgboost(tmp_path: Path, data, classifier, fmt: str) -> None:
    _, _, X_test = data
    model = classifier
    model_file = tmp_path / f"clf.{fmt}"
    model.save_model(model_file)
    expected = model.predict_proba(X_test)
    assert expected.shape == (len(X_test), 6)
    compiled = _check(model_file, tmp_path / "out", f"clf_{fmt}", X_test, expected)
    assert compiled.objective == "multi:softprob" and compiled.num_class == [6]
    np.testing.assert_allclose(compiled.predict(X_test).sum(axis=1), 1.0, atol=1e-5)
    booster = xgb.Booster(model_file=str(model_file))
    np.testing.assert_allclose(
        compiled.predict(X_test, output_margin=True),
        booster.inplace_predict(X_test, predict_type="margin"),
        rtol=0,
        atol=ATOL,
    )


def test_rejects_wrong_feature_count(tmp_path: Path, data) -> None:
    X, y, _ = data
    model = xgb.XGBRegressor(n_estimators=3, max_depth=2, max_bin=16, n_jobs=2).fit(X, y)
    model.save_model(tmp_path / "tiny.json")
    compiled = CompiledTrees(compile_xgboost(tmp_path / "tiny.json", tmp_path, "tiny"))
    with pytest.raises(ValueError, match="450 features"):
        compiled.predict(X[:2, :100])
    assert compiled.predict(X[:0]).shape == (0,)


@pytest.mark.slow  # the session's trained artifact
def test_trained_models_compile_and_match_xgboost_on_real_test_essays(trained_artifact: Path, shared_essays, tmp_path):
    """The shipped artifact's residual trees (its only trees: CEFR probabilities come from the latent scale), on
    feature vectors of real held-out essays (the artifact's test split)."""
    import pandas as pd

    from essayscore.artifacts import Layout
    from essayscore.essay_scorer import EssayScorer
    from essayscore.scoring_model import XGBoostTrees

    split = pd.read_csv(trained_artifact / Layout.SPLITS)
    test_ids = set(split.loc[split["split"] == "test", "essay_id"])
    rows = shared_essays[shared_essays["essay_id"].isin(test_ids)].head(24)
    assert len(rows) >= 10
    scored = EssayScorer(trained_artifact).score(list(rows["essay"]), list(rows["prompt"]))
    x = np.stack([s.feature_vector for s in scored]).astype(np.float32)
    x[0, :5] = np.nan  # missing values route like XGBoost's
    reference = XGBoostTrees.load(trained_artifact / Layout.TREES)
    band = CompiledTrees(compile_xgboost(trained_artifact / Layout.TREES, tmp_path, "band"))
    expected = reference.predict_band(x)
    assert expected.shape == (len(x),) and np.ptp(expected) > 0  # real trees, not a constant
    np.testing.assert_allclose(band.predict(x), expected, atol=1e-5, rtol=0)
