"""Evaluation report: per-source grouped cross-validation, cross-source transfer, harmonisation choices,
length-controlled figures, ablations by feature group (the error detector and the embeddings included), the
boosting-library benchmark, intervals and calibration, and the shipped model on its own test split.

    essayscore evaluate [--model latest] [--out docs] [--folds 5]   ->  docs/evaluation.md + docs/*.png

Every figure is computed here, in one run, from the data the artifact was trained on; nothing is tuned on the
held-out folds (each fold's early stopping, calibration and conformal quantiles use a validation part of its own
training rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from essayscore.artifacts import Artifact
from essayscore.features import FEATURES, GROUPS
from essayscore.scoring_model import ScoringModel, XGBoostTrees
from essayscore.settings import get_settings
from essayscore.torch_encoder import TorchEncoder
from training.error_detector import DetectorConfig, detector_stage
from training.fit import FitConfig, LightGBMTrees, TreeConfig, fit_scoring_model, predict_rows
from training.matrices import Matrices, build_matrices
from training.metrics import spearman, split_metrics
from training.sources import load_artifact_data, load_wi_edits
from training.splits import cv_folds

# The "small set of handcrafted features" baseline: plain counts and rates any essay scorer starts from.
SMALL_FEATURE_SET = ("word_count", "sentence_count", "mean_sentence_length", "mean_word_length", "ttr", "root_ttr",
                     "unique_word_count", "long_word_share", "rare_word_share", "mean_content_zipf",
                     "flesch_reading_ease", "typos_per_100w", "grammar_per_100w", "punctuation_per_100w",
                     "error_rate_per_100w", "connectives_per_100w")
LENGTH_BINS = (0, 120, 200, 280, 10_000)


@dataclass
class Variant:
    """One row of a comparison: which rows it trains on, how it fits, and what it sees."""

    name: str
    fit: FitConfig
    sources: tuple[str, ...] = ("ielts", "wi")
    pca: int | None = 0
    features: list[int] | None = None
    matrices: Callable[[Matrices], Matrices] | None = None  # e.g. the detector features removed


def _indices(names, wanted) -> list[int]:
    return [names.index(n) for n in wanted]


def _without_detector(m: Matrices) -> Matrices:
    hand = m.handcrafted.copy()
    hand[:, [i for i, f in enumerate(FEATURES) if f.group == "learned_errors"]] = np.nan
    return replace(m, handcrafted=hand)


def variants(m: Matrices, base: FitConfig, pca: int | None) -> dict[str, list[Variant]]:
    names = m.feature_names
    linear_only = replace(base, trees=replace(base.trees, max_rounds=0))
    shipped = Variant("shipped configuration", base, pca=pca)
    groups = {
        "main": [
            shipped,
            Variant("baseline: word count only (ordinal, both sources)",
                    replace(linear_only, block_length_proxies=False), features=_indices(names, ["word_count"])),
            Variant(f"baseline: {len(SMALL_FEATURE_SET)} simple features", base,
                    features=_indices(names, SMALL_FEATURE_SET)),
            Variant("IELTS only, length proxies allowed, no detector (closest to the previous model)",
                    replace(base, block_length_proxies=False, harmonisation="anchored"), sources=("ielts",),
                    matrices=_without_detector),
        ],
        "harmonisation": [
            Variant("anchored: CEFR levels at the table's band boundaries, sub-levels learned (shipped)", base,
                    pca=pca),
            Variant("free: all W&I cut points learned", replace(base, harmonisation="free"), pca=pca),
            Variant("naive pooling: each W&I sub-level read as a fixed band", replace(base, harmonisation="naive"),
                    pca=pca),
            Variant("anchored, sources unweighted (W&I's 2,384 texts outweigh IELTS's 1,628)",
                    replace(base, source_balance=False), pca=pca),
            Variant("IELTS only (with detector features)", base, sources=("ielts",), pca=pca),
            Variant("IELTS only, no detector (what --sources ielts ships)", base, sources=("ielts",), pca=pca,
                    matrices=_without_detector),
            Variant("W&I only", base, sources=("wi",), pca=pca),
        ],
        "model_form": [
            Variant("linear ordinal only (no trees)", linear_only, pca=pca),
            Variant("linear + residual trees (shipped)", base, pca=pca),
            Variant("trees without monotone constraints", replace(base, trees=replace(base.trees, monotone=False)),
                    pca=pca),
            Variant("length proxies allowed (counts that grow with length)",
                    replace(base, block_length_proxies=False), pca=pca),
            Variant("length weight uncapped (fitted freely)", replace(base, max_length_weight=3.0), pca=pca),
            Variant("LightGBM residual trees", replace(base, trees=replace(base.trees, library="lightgbm")),
                    pca=pca),
        ],
        "ablations": [
            Variant("+ embeddings (16 principal components)", base, pca=16),
            Variant("+ embeddings (64 principal components)", base, pca=64),
            Variant("without the learned error detector", base, pca=pca, matrices=_without_detector),
            *[Variant(f"without {group}", base, pca=pca,
                      features=[i for i, f in enumerate(FEATURES) if f.group != group])
              for group in GROUPS],
        ],
    }
    return groups


def _run_fold(v: Variant, m: Matrices, fit: np.ndarray, val: np.ndarray, held: np.ndarray):
    mv = v.matrices(m) if v.matrices else m
    keep = lambda rows: rows[np.isin(mv.source[rows], v.sources)]
    model = fit_scoring_model(mv, keep(fit), keep(val), v.pca, v.fit, v.features)
    return model, predict_rows(model, mv, held, v.features)


def cross_validate(essays: pd.DataFrame, m: Matrices, groups: dict[str, list[Variant]], folds: int):
    """Every variant on the same grouped folds. Returns per-fold metrics and, per variant, the out-of-fold
    predictions of every row (for the length analysis and the plots)."""
    rows, oof = [], {}
    fold_list = cv_folds(essays, folds)
    for section, vs in groups.items():
        for v in vs:
            t0 = time.perf_counter()
            preds = {}
            for k, (fit, val, held) in enumerate(fold_list):
                model, pred = _run_fold(v, m, fit, val, held)
                rows.append({"section": section, "variant": v.name, "fold": k,
                             "fit_s": time.perf_counter() - t0, **split_metrics(model, m, held, pred)})
                preds[k] = (held, pred, model)
            oof[(section, v.name)] = preds
            print(f"cv [{section}] {v.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return pd.DataFrame(rows), oof


def transfer(m: Matrices, base: FitConfig, pca: int | None, splits: pd.DataFrame) -> list[dict]:
    """Train on one source's train/validation rows, score every row of the other source."""
    split = splits["split"].to_numpy()
    out = []
    for name, train_src, target, mat in (
            ("IELTS only -> all W&I (detector features kept)", "ielts", "wi", m),
            ("IELTS only, no detector -> all W&I", "ielts", "wi", _without_detector(m)),
            ("W&I only -> all IELTS", "wi", "ielts", m)):
        fit = np.flatnonzero((split == "train") & (mat.source == train_src))
        val = np.flatnonzero((split == "validation") & (mat.source == train_src))
        rows = np.flatnonzero(mat.source == target)
        model = fit_scoring_model(mat, fit, val, pca, base)
        pred = predict_rows(model, mat, rows)
        figures = split_metrics(model, mat, rows, pred)
        out.append({"variant": name, "n": len(rows), **{k: v for k, v in figures.items() if k.startswith(target)}})
    return out


def length_analysis(m: Matrices, oof) -> dict:
    """Predicted level by human level within length bins, and partial rank correlations controlling for length."""
    held = np.concatenate([h for h, _, _ in oof.values()])
    proficiency = np.concatenate([p.proficiency for _, p, _ in oof.values()])
    band = np.concatenate([p.raw for _, p, _ in oof.values()])
    order = np.argsort(held)
    held, proficiency, band = held[order], proficiency[order], band[order]
    words = m.n_words[held]
    out = {}
    for source, label, pred in (("wi", m.ordinal[held] // 2, proficiency), ("ielts", m.band[held], band)):
        mask = m.source[held] == source
        lab, pr, w = label[mask], pred[mask], words[mask]
        bins = np.digitize(w, LENGTH_BINS[1:-1])
        table = []
        for b in range(len(LENGTH_BINS) - 1):
            row: dict[str, object] = {"words": f"{LENGTH_BINS[b]}-{LENGTH_BINS[b + 1] - 1}" if b < len(LENGTH_BINS) - 2
                   else f">={LENGTH_BINS[b]}"}
            for level in np.unique(lab):
                sel = (bins == b) & (lab == level)
                row[str(level)] = (float(pr[sel].mean()), int(sel.sum())) if sel.sum() >= 5 else None
            row["spearman_within_bin"] = spearman(pr[bins == b], lab[bins == b]) if (bins == b).sum() > 10 else None
            table.append(row)
        by_level = [{"level": str(level), "n": int((lab == level).sum()), "mean": float(pr[lab == level].mean()),
                     "p10": float(np.quantile(pr[lab == level], 0.1)), "p90": float(np.quantile(pr[lab == level], 0.9)),
                     "median_words": float(np.median(w[lab == level]))} for level in np.unique(lab)]
        out[source] = {"by_length_bin": table, "by_level": by_level, "spearman": spearman(pr, lab),
                       "words_spearman": spearman(w, lab),
                       "partial_spearman_given_words": partial_spearman(pr, lab, w),
                       "levels": [str(x) for x in np.unique(lab)]}
    return out


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Rank correlation of x and y with the (rank-linear) effect of z removed from both."""
    from scipy.stats import rankdata

    rx, ry, rz = (rankdata(a) for a in (x, y, z))
    def residual(a):
        slope, intercept = np.polyfit(rz, a, 1)
        return a - (slope * rz + intercept)
    return float(np.corrcoef(residual(rx), residual(ry))[0, 1])


def halving_check(artifact: Artifact, essays: pd.DataFrame, splits: pd.DataFrame, limit: int = 120) -> dict:
    """The shipped model on test-split texts of at least 200 words and on their first halves: how far the
    reported CEFR level drops when a text is cut in two (the under-length rule included)."""
    from essayscore.essay_scorer import EssayScorer
    from essayscore.text import words

    test = essays[(splits["split"].to_numpy() == "test") & (essays["n_words"].to_numpy() >= 200)]
    test = test.sort_values("essay_id").head(limit)
    scorer = EssayScorer(artifact)
    full = scorer.score(list(test["essay"]), list(test["prompt"]))
    halves = []
    for text in test["essay"]:
        tokens = text.split()
        halves.append(" ".join(tokens[: max(1, len(tokens) // 2)]))
    half = scorer.score(halves, list(test["prompt"]))
    levels = ("A1", "A2", "B1", "B2", "C1", "C2")
    drop = np.array([levels.index(a.cefr) - levels.index(b.cefr) for a, b in zip(full, half)])
    band_drop = np.array([a.ielts_raw - b.ielts_raw for a, b in zip(full, half)])
    return {"n": int(len(test)), "median_words": float(np.median([len(words(t)) for t in test["essay"]])),
            "level_drop_counts": {str(k): int((drop == k).sum()) for k in sorted(set(drop.tolist()))},
            "share_dropping_at_most_one_level": float(np.mean(drop <= 1)),
            "mean_band_drop": float(band_drop.mean()), "by_source": {
                s: float(band_drop[test["source"].to_numpy() == s].mean()) for s in test["source"].unique()}}


def halving_sensitivity(artifact: Artifact, essays: pd.DataFrame, splits: pd.DataFrame, n: int = 300) -> list[dict]:
    """How far each signal moves, in training standard deviations, when a training text of at least 200 words is
    cut to its first half: the measurement behind ``training.fit.LENGTH_PROXIES``."""
    from essayscore.features import FeatureExtractor
    from training.fit import LENGTH_PROXIES

    rows = essays[(splits["split"].to_numpy() == "train") & (essays["n_words"].to_numpy() >= 200)]
    rows = rows.sample(min(n, len(rows)), random_state=0)
    extractor = FeatureExtractor(error_detector=artifact.error_detector())
    full, _ = extractor.extract_many(list(rows["essay"]), list(rows["prompt"]))
    halves = [" ".join(t.split()[: len(t.split()) // 2]) for t in rows["essay"]]
    half, _ = extractor.extract_many(halves, list(rows["prompt"]))
    sd = np.nanstd(full, axis=0)
    with np.errstate(invalid="ignore"):
        shift = np.nanmean(half - full, axis=0) / np.where(sd > 0, sd, np.nan)
    out = [{"feature": f.name, "shift_sd": float(v), "blocked": f.name in LENGTH_PROXIES}
           for f, v in zip(FEATURES, shift) if np.isfinite(v)]
    return sorted(out, key=lambda r: -abs(r["shift_sd"]))


def boosting_benchmark(m: Matrices, base: FitConfig, splits: pd.DataFrame) -> list[dict]:
    """XGBoost vs LightGBM residual trees on the artifact's own train/validation/test split: tree count, Treelite
    compile time, and per-essay latency of the native library and of the compiled library, side by side."""
    import tempfile

    import treelite

    from essayscore.compiled_trees import compile_xgboost

    split = splits["split"].to_numpy()
    train, val, test = (np.flatnonzero(split == s) for s in ("train", "validation", "test"))
    rows = []
    for library in ("xgboost", "lightgbm"):
        cfg = replace(base, trees=replace(base.trees, library=library))
        t0 = time.perf_counter()
        model = fit_scoring_model(m, train, val, 0, cfg)
        fit_s = time.perf_counter() - t0
        figures = split_metrics(model, m, test, predict_rows(model, m, test))
        x = model.transform(m.handcrafted[test], None)
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            booster = cast("XGBoostTrees | LightGBMTrees", model.trees).regressor
            t0 = time.perf_counter()
            if library == "xgboost":
                booster.save_model(tmp / "trees.json")
                lib = compile_xgboost(tmp / "trees.json", tmp, "trees", nthread=1)
                n_trees = booster.num_boosted_rounds()
            else:
                import tl2cgen

                tl_model = treelite.frontend.from_lightgbm(booster)
                lib = tmp / "trees.so"
                tl2cgen.export_lib(tl_model, toolchain="gcc", libpath=str(lib), params={"parallel_comp": 1},
                                   nthread=1)
                n_trees = booster.num_trees()
            compile_s = time.perf_counter() - t0
            compiled = _compiled_predictor(lib, library)
            native_ms = _median_ms(lambda row, model=model: model.trees.predict_band(row), x)
            compiled_ms = _median_ms(compiled, x)
            max_diff = float(np.max(np.abs(compiled(x) - model.trees.predict_band(x))))
        rows.append({"library": library, "trees": int(n_trees), "fit_s": fit_s, "compile_s": compile_s,
                     "native_ms_per_essay": native_ms, "compiled_ms_per_essay": compiled_ms,
                     "compiled_vs_native_max_abs_diff": max_diff,
                     **{k: figures[k] for k in ("ielts_qwk", "ielts_rmse", "wi_spearman", "wi_cefr_qwk")}})
    return rows


def _compiled_predictor(lib: Path, library: str):
    if library == "xgboost":
        from essayscore.compiled_trees import CompiledTrees

        trees = CompiledTrees(lib, nthread=1)
        return lambda x: np.asarray(trees.predict(np.atleast_2d(x).astype(np.float32)), dtype=np.float64).reshape(-1)
    import tl2cgen

    predictor = tl2cgen.Predictor(str(lib), nthread=1)
    return lambda x: np.asarray(predictor.predict(tl2cgen.DMatrix(np.atleast_2d(x).astype(np.float32))),
                                dtype=np.float64).reshape(-1)


def _median_ms(predict, x: np.ndarray, repeats: int = 200) -> float:
    times = []
    for i in range(repeats):
        row = x[i % len(x): i % len(x) + 1]
        t0 = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def coherence_check(model: ScoringModel) -> dict:
    """Over a grid of latent values: the reported level is the median of the CEFR probabilities, and the two most
    likely levels are neighbours."""
    from essayscore.bands import bands_to_cefr_index
    from essayscore.scoring_model import bands_from_raw, cefr_distribution

    raw = np.linspace(0.0, 9.0, 1801)
    p = cefr_distribution(raw, model.scale)
    level = bands_to_cefr_index(bands_from_raw(raw))
    top2 = np.argsort(-p, axis=1)[:, :2]
    meaningful = np.take_along_axis(p, top2[:, 1:2], axis=1)[:, 0] > 1e-9  # far out, the rest tie at ~0
    cdf = np.cumsum(p, axis=1)
    median = np.argmax(cdf >= 0.5 - 1e-9, axis=1)
    return {"grid_points": int(len(raw)), "scale": model.scale,
            "top_two_adjacent_share": float(np.mean(np.abs(top2[meaningful, 0] - top2[meaningful, 1]) == 1)),
            "reported_is_median_share": float(np.mean(median == level)),
            "argmax_within_one_of_reported_share": float(np.mean(np.abs(p.argmax(axis=1) - level) <= 1))}


def evaluate(reference: str, out_dir: Path, folds: int = 5, ablations: bool = True) -> Path:
    from training.report import write_report

    started = time.perf_counter()
    settings = get_settings()
    artifact = Artifact.open(reference, settings.artifacts_dir)
    config = artifact.config
    train_cfg = config["train"]
    essays, splits = load_artifact_data(artifact)
    learned = None
    detector_metrics = None
    if train_cfg.get("error_detector") and "wi" in train_cfg["sources"]:
        stage = detector_stage(essays, load_wi_edits(train_cfg.get("wi_path")),
                               DetectorConfig(**train_cfg["detector"]))
        learned, detector_metrics = stage.features, stage.metrics
    enc = config["encoder"]
    m = build_matrices(essays, TorchEncoder(enc["name"], window=enc["window"], stride=enc["stride"]),
                       settings.cache_dir, learned=learned)
    fit_cfg = _fit_config(train_cfg["fit"])
    pca = train_cfg.get("pca_components", 0)
    metrics = artifact.metrics

    groups = variants(m, fit_cfg, pca)
    if not ablations:
        groups = {"main": groups["main"]}
    cv, oof = cross_validate(essays, m, groups, folds)
    shipped_oof = oof[("main", "shipped configuration")]
    report = write_report(
        out_dir=Path(out_dir), manifest=artifact.manifest, metrics=metrics, cv=cv, essays=essays, m=m, folds=folds,
        shipped_oof=shipped_oof,
        transfer=transfer(m, fit_cfg, pca, splits),
        length=length_analysis(m, shipped_oof),
        halving=halving_check(artifact, essays, splits),
        sensitivity=halving_sensitivity(artifact, essays, splits),
        boosting=boosting_benchmark(m, fit_cfg, splits) if ablations else [],
        coherence=coherence_check(artifact.scoring_model()),
        detector=detector_metrics, seconds=time.perf_counter() - started)
    print(f"report: {report}")
    return report


def _fit_config(raw: dict) -> FitConfig:
    raw = dict(raw)
    trees = TreeConfig(**raw.pop("trees"))
    raw["conformal_edges"] = tuple(raw.get("conformal_edges", (5.25, 6.75)))
    return FitConfig(**raw, trees=trees)
