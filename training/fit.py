"""Fit one scoring model (:class:`essayscore.scoring_model.ScoringModel`) on train / validation rows of any mix of
sources. Used for the final model, the cross-validation folds, the baselines and the ablations alike.

The model is a cumulative-logit ordinal model of one latent proficiency ``eta`` (IELTS band units):

    P(label <= k | source s) = logistic((cut[s, k] - eta_s) / scale[s])
    eta       = linear(x) + length_weight * length_term(words) + trees(x)
    eta_ielts = eta + under_length_weight * under_length(words)      (IELTS Task 2 only)

IELTS cut points are fixed halfway between half bands, which anchors the scale (``<4`` is the censored bottom
category, not a made-up 3.5). W&I's CEFR sub-levels get their own cut points and scale, learned jointly: the
harmonisation is where the model puts A1.i ... C2.ii on the band scale, measured, not assumed.

1. The linear part, the length weight, the under-length weight and every source's cut points and scale are
   fitted together by L-BFGS (torch autograd) with an L2 penalty.
2. Shallow boosted trees then fit the residual on the same likelihood (XGBoost custom objective, the linear
   ``eta`` as base margin, early stopping on validation), with monotone constraints where the direction of a
   signal is known, and without the length proxies: length enters through the bounded term alone.
3. On validation: the band distribution's scale (calibration) and conditional conformal quantiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from essayscore.bands import MAX_BAND
from essayscore.features.registry import FEATURES
from essayscore.scoring_model import (
    HALF_BANDS,
    IELTS_CUTS,
    LinearPart,
    Preprocessor,
    ScoringModel,
    XGBoostTrees,
    bands_from_raw,
    length_term,
    under_length,
)
from training.matrices import Matrices

# Signals that move with the length of the text rather than with how well it is written: they would make length
# the hidden backbone of the score, so the model sees length only through its one explicit, bounded term (and the
# IELTS under-length rule). Counts that grow with the text, and every signal that moves by more than half a
# training standard deviation when a text is cut in half (the "halving sensitivity" table of docs/evaluation.md,
# measured on training texts): the closing connective and conclusion marker, sentence-opening variety and prompt
# keyword coverage.
LENGTH_PROXIES = frozenset({
    "word_count", "unique_word_count", "sentence_count", "below_min_length", "awl_family_count",
    "connective_variety", "verb_form_variety", "distinct_error_types", "ttr", "root_ttr", "log_ttr",
    "content_lemma_root_ttr", "hapax_share", "paragraph_count",
    "conclusion_marker", "connectives_conclusion_per_100w", "sentence_opening_variety", "prompt_keyword_coverage",
})
# The IELTS under-length rule takes at most this many bands off an empty answer (half of it at 125 words): the
# data alone would take ~4, which would make a short but well-written text's level collapse.
MAX_UNDER_LENGTH_PENALTY = 2.0
MAX_BAND_SCALE = 0.9  # logistic scale of the band distribution, at most (see _calibrate_scale)
# Signals whose direction is known: the trees may only move the score that way (error densities lower it,
# sophistication and error-free writing raise it).
MONOTONE_UP = frozenset({"error_free_sentence_share", "detected_clean_sentence_share", "rare_word_share",
                         "awl_word_share", "mtld", "hdd", "mattr", "mean_word_length", "long_word_share"})


def monotone_direction(name: str) -> int:
    if name in MONOTONE_UP:
        return 1
    group = next((f.group for f in FEATURES if f.name == name), None)
    if group in ("grammar_spelling", "learned_errors") and (
        name.endswith("_per_100w") or name == "misspelt_word_share"
    ):
        return -1
    return 0


@dataclass
class TreeConfig:
    """Residual trees. Tree counts are capped so tl2cgen compiles within CI's budget and SHAP via pred_contribs
    stays in milliseconds. ``max_rounds=0`` gives a purely linear ordinal model."""

    max_rounds: int = 300
    max_depth: int = 3
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.6
    min_child_weight: float = 5.0
    reg_lambda: float = 5.0
    early_stopping_rounds: int = 30
    nthread: int = 2
    seed: int = 0
    monotone: bool = True
    library: str = "xgboost"  # "lightgbm": the same trees with LightGBM (benchmarked in docs/evaluation.md)


# How the W&I CEFR sub-levels meet the band scale (compared in docs/evaluation.md):
#   "anchored": each CEFR level's boundaries sit where the contract's band -> CEFR table puts them (A2 from band 4,
#               B1 from 5, B2 from 6, C1 from 7, C2 from 8.5); the sub-level cut inside each level and the scale
#               are learned. The API's CEFR then means the same thing on both sources.
#   "free":     all eleven W&I cut points are learned (pure ranking information).
#   "naive":    each sub-level is read as a fixed IELTS band (A1 -> <4, A2.i -> 4 ... C2.ii -> 9).
HARMONISATIONS = ("anchored", "free", "naive")
# W&I sub-level -> IELTS half-band category, for "naive" (categories 0..11 = <4, 4, 4.5 ... 9)
NAIVE_WI_TO_IELTS = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11])
# table boundaries on the latent scale: band cut points 3.75 (A1|A2), 4.75, 5.75, 6.75, 8.25 (C1|C2)
CEFR_LATENT_BOUNDARIES = (3.75, 4.75, 5.75, 6.75, 8.25)


@dataclass
class FitConfig:
    l2: float = 1e-3  # ridge penalty on the linear weights, per row (features are z-scored)
    harmonisation: str = "anchored"  # one of HARMONISATIONS
    # length only through the bounded term; False lets the model read the length proxies (an ablation)
    block_length_proxies: bool = True
    # Bands per log-word of the length term: at most 0.52 bands lost by halving a text, 1.4 between 60 and 400
    # words. Fitted freely it takes ~1.1 (0.8 bands for a halved text): length would again carry the score.
    max_length_weight: float = 0.75
    source_balance: bool = True  # weight sources equally in the likelihood, whatever their sizes
    interval_level: float = 0.9
    conformal_edges: tuple[float, ...] = (5.25, 6.75)  # predicted-band bins of the conditional interval
    trees: TreeConfig = field(default_factory=TreeConfig)


@dataclass
class Ordinal:
    """One source's ordinal head: fixed or learned cut points, and a scale."""

    cuts: np.ndarray
    scale: float


def _interval_nll_terms(eta: np.ndarray, ordinal: np.ndarray, head: Ordinal):
    """(a, b) standardised lower and upper cut distances of each row's category."""
    cuts = np.concatenate([[-np.inf], head.cuts, [np.inf]])
    return (cuts[ordinal] - eta) / head.scale, (cuts[ordinal + 1] - eta) / head.scale


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def ordinal_grad_hess(eta: np.ndarray, ordinal: np.ndarray, head: Ordinal) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of -log P(category) with respect to eta (closed form for the logistic link)."""
    a, b = _interval_nll_terms(eta, ordinal, head)
    fa, fb = _logistic(a), _logistic(b)
    da, db = fa * (1 - fa), fb * (1 - fb)  # densities (0 at infinite cuts)
    d2a, d2b = da * (1 - 2 * fa), db * (1 - 2 * fb)
    p = np.maximum(fb - fa, 1e-12)
    s = head.scale
    grad = (db - da) / (s * p)
    hess = ((db - da) ** 2 - (d2b - d2a) * p) / (s * s * p * p)
    return grad, np.maximum(hess, 1e-6)


def ordinal_nll(eta: np.ndarray, ordinal: np.ndarray, head: Ordinal) -> np.ndarray:
    a, b = _interval_nll_terms(eta, ordinal, head)
    return -np.log(np.maximum(_logistic(b) - _logistic(a), 1e-12))


def source_weights(source: np.ndarray, sources: list[str], balance: bool) -> np.ndarray:
    """Per-row likelihood weights: with ``balance`` every source weighs as much as the others, whatever its size."""
    weights = np.ones(len(source))
    if balance:
        for s in sources:
            weights[source == s] = len(source) / (len(sources) * max(1, int((source == s).sum())))
    return weights


def mean_source_nll(eta: np.ndarray, source: np.ndarray, ordinal: np.ndarray, heads: dict[str, Ordinal]) -> float:
    """Ordinal NLL averaged per row within each source, then over the sources present (early stopping)."""
    present = [s for s in heads if (source == s).any()]
    return sum(float(ordinal_nll(eta[source == s], ordinal[source == s], heads[s]).mean())
               for s in present) / max(1, len(present))


def _fit_linear(x: np.ndarray, words: np.ndarray, source: np.ndarray, ordinal: np.ndarray, cfg: FitConfig,
                sources: list[str], task2: np.ndarray) -> tuple[LinearPart, float, dict[str, Ordinal]]:
    """Joint L-BFGS fit of the linear part and every source's head (torch autograd, float64)."""
    import torch

    torch.manual_seed(0)
    X = torch.tensor(np.nan_to_num(x, nan=0.0), dtype=torch.float64)
    L = torch.tensor(length_term(words), dtype=torch.float64)
    U = torch.tensor(np.where(task2, under_length(words), 0.0), dtype=torch.float64)  # the Task 2 rule: IELTS rows
    n_levels = {s: int(ordinal[source == s].max()) + 1 if (source == s).any() else 2 for s in sources}
    W = torch.tensor(source_weights(source, sources, cfg.source_balance), dtype=torch.float64)
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([6.0], dtype=torch.float64, requires_grad=True)
    lw_raw = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # length weight, in (0, max_length_weight)
    g_raw = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)  # under-length weight, bounded below
    log_scale = {s: torch.tensor([np.log(0.6)], dtype=torch.float64, requires_grad=True) for s in sources}
    free = [s for s in sources if s != "ielts"]
    # learned cut points: a first cut and positive increments (softplus), so they stay ordered ("free"), or one
    # sub-level cut inside each fixed CEFR level ("anchored")
    first = {s: torch.tensor([3.0], dtype=torch.float64, requires_grad=True) for s in free}
    steps = {s: torch.full((n_levels[s] - 2,), -0.5, dtype=torch.float64, requires_grad=True) for s in free}
    inner = {s: torch.zeros(len(CEFR_LATENT_BOUNDARIES) + 1, dtype=torch.float64, requires_grad=True) for s in free}
    bounds = torch.tensor(CEFR_LATENT_BOUNDARIES, dtype=torch.float64)
    params = [w, b, lw_raw, g_raw, *log_scale.values(), *first.values(), *steps.values(), *inner.values()]
    fixed = torch.tensor(IELTS_CUTS, dtype=torch.float64)
    ord_t = torch.tensor(ordinal, dtype=torch.long)
    masks = {s: torch.tensor(source == s) for s in sources}

    def cuts_of(s: str) -> torch.Tensor:
        if s == "ielts":
            return fixed
        if cfg.harmonisation == "anchored" and n_levels[s] == 12:
            t = torch.sigmoid(inner[s])
            softplus = torch.nn.functional.softplus
            subs = [bounds[0] - softplus(inner[s][0] + 1.0)]  # A1.i | A1.ii, below the A1 | A2 boundary
            subs += [bounds[i] + t[i + 1] * (bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)]
            subs += [bounds[-1] + softplus(inner[s][-1])]  # C2.i | C2.ii, above the C1 | C2 boundary
            out = []
            for i, sub in enumerate(subs):
                out.append(sub.reshape(1))
                if i < len(bounds):
                    out.append(bounds[i].reshape(1))
            return torch.cat(out)
        return torch.cat([first[s], first[s] + torch.cumsum(torch.nn.functional.softplus(steps[s]), 0)])

    def under_weight() -> torch.Tensor:  # in (-MAX_UNDER_LENGTH_PENALTY, 0)
        return -MAX_UNDER_LENGTH_PENALTY * torch.sigmoid(g_raw)

    def length_weight() -> torch.Tensor:
        return cfg.max_length_weight * torch.sigmoid(lw_raw)

    def loss() -> torch.Tensor:
        eta = b + X @ w + length_weight() * L
        total = torch.zeros((), dtype=torch.float64)
        for s in sources:
            m = masks[s]
            if not bool(m.any()):
                continue
            e = eta[m] + under_weight() * U[m]
            cuts = torch.cat([torch.tensor([-1e6], dtype=torch.float64), cuts_of(s),
                              torch.tensor([1e6], dtype=torch.float64)])
            k = ord_t[m]
            scale = torch.exp(log_scale[s])
            p = torch.sigmoid((cuts[k + 1] - e) / scale) - torch.sigmoid((cuts[k] - e) / scale)
            total = total - (W[m] * torch.log(torch.clamp(p, min=1e-12))).sum()
        return total / len(source) + cfg.l2 * (w * w).sum()  # mean NLL per row + ridge

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=500, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)
    heads = {s: Ordinal(cuts_of(s).detach().numpy().copy(), float(torch.exp(log_scale[s]).item())) for s in sources}
    linear = LinearPart(w.detach().numpy().copy(), float(b.item()), float(length_weight().item()))
    # with no Task 2 answer among the rows the rule has nothing to learn from: no adjustment
    return linear, float(under_weight().item()) if task2.any() else 0.0, heads


def _observed_eta(eta: np.ndarray, words: np.ndarray, task2: np.ndarray, under_weight: float) -> np.ndarray:
    return eta + np.where(task2, under_weight * under_length(words), 0.0)


def _fit_trees(x_tr, base_tr, src_tr, ord_tr, x_va, base_va, src_va, ord_va, heads, names, cfg: TreeConfig,
               weights_tr, proxies=LENGTH_PROXIES):
    import xgboost as xgb

    if cfg.max_rounds <= 0:
        return None
    tree_x_tr, tree_x_va = x_tr.copy(), x_va.copy()
    blocked = [j for j, n in enumerate(names) if n in proxies]
    tree_x_tr[:, blocked] = np.nan  # never split on a length proxy
    tree_x_va[:, blocked] = np.nan

    def grad_hess(margin, src, ords):
        g, h = np.zeros(len(margin)), np.zeros(len(margin))
        for s, head in heads.items():
            m = src == s
            if m.any():
                g[m], h[m] = ordinal_grad_hess(margin[m], ords[m], head)
        return g, h

    def objective(predt, dtrain):
        g, h = grad_hess(predt, src_tr, ord_tr)
        return g * weights_tr, h * weights_tr

    def nll(predt, dmat):
        src, ords = (src_va, ord_va) if dmat is dval else (src_tr, ord_tr)
        return "ordinal_nll", mean_source_nll(predt, src, ords, heads)

    dtrain = xgb.DMatrix(tree_x_tr, base_margin=base_tr)
    dval = xgb.DMatrix(tree_x_va, base_margin=base_va)
    params = {"max_depth": cfg.max_depth, "eta": cfg.learning_rate, "subsample": cfg.subsample,
              "colsample_bytree": cfg.colsample_bytree, "min_child_weight": cfg.min_child_weight,
              "lambda": cfg.reg_lambda, "nthread": cfg.nthread, "seed": cfg.seed, "tree_method": "hist",
              "base_score": 0.0, "disable_default_eval_metric": 1}
    if cfg.monotone:
        params["monotone_constraints"] = "(" + ",".join(str(monotone_direction(n)) for n in names) + ")"
    if cfg.library == "lightgbm":
        return _fit_lightgbm(tree_x_tr, base_tr, tree_x_va, base_va, grad_hess, heads, src_tr, ord_tr, src_va,
                             ord_va, names, cfg, weights_tr)
    booster = xgb.train(params, dtrain, num_boost_round=cfg.max_rounds, obj=objective, custom_metric=nll,
                        evals=[(dval, "validation")], early_stopping_rounds=cfg.early_stopping_rounds,
                        verbose_eval=False)
    return booster[: booster.best_iteration + 1]


class LightGBMTrees:
    """LightGBM residual trees behind the TreeModels interface (the library comparison; not shipped)."""

    def __init__(self, booster):
        self.regressor = booster

    def predict_band(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.regressor.predict(np.atleast_2d(x), raw_score=True), dtype=np.float64).reshape(-1)

    def num_trees(self) -> int:
        return int(self.regressor.num_trees())


def _fit_lightgbm(x_tr, base_tr, x_va, base_va, grad_hess, heads, src_tr, ord_tr, src_va, ord_va, names,
                  cfg: TreeConfig, weights_tr):
    import lightgbm as lgb

    def objective(preds, data):
        g, h = grad_hess(preds + base_tr, src_tr, ord_tr)  # LightGBM hands the margin without init_score
        return g * weights_tr, h * weights_tr

    def metric(preds, data):  # LightGBM hands the margin without init_score
        return "ordinal_nll", mean_source_nll(preds + base_va, src_va, ord_va, heads), False

    params = {"objective": objective, "learning_rate": cfg.learning_rate, "num_leaves": 2 ** cfg.max_depth,
              "max_depth": cfg.max_depth, "bagging_fraction": cfg.subsample, "bagging_freq": 1,
              "feature_fraction": cfg.colsample_bytree, "min_sum_hessian_in_leaf": cfg.min_child_weight,
              "lambda_l2": cfg.reg_lambda, "num_threads": cfg.nthread, "seed": cfg.seed, "verbose": -1,
              "metric": "None", "min_data_in_leaf": 10}
    if cfg.monotone:
        params["monotone_constraints"] = [monotone_direction(n) for n in names]
    train = lgb.Dataset(x_tr, free_raw_data=False)
    val = lgb.Dataset(x_va, reference=train, free_raw_data=False)
    booster = lgb.train(params, train, num_boost_round=cfg.max_rounds, valid_sets=[val], feval=metric,
                        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    booster.best_iteration = booster.best_iteration or booster.current_iteration()
    return LightGBMTrees(booster.__class__(model_str=booster.model_to_string(num_iteration=booster.best_iteration)))


def _calibrate_scale(raw: np.ndarray, y: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    ordinal = np.clip(np.rint((y - 3.5) * 2).astype(int), 0, len(HALF_BANDS) - 1)

    def nll(log_s: float) -> float:
        return float(ordinal_nll(raw, ordinal, Ordinal(IELTS_CUTS, float(np.exp(log_s)))).mean())

    # capped at MAX_BAND_SCALE: beyond ~1 band the semi-infinite A1 level could out-weigh A2 while B1 is the
    # most likely level, and the two most likely levels would no longer be neighbours
    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.1), np.log(MAX_BAND_SCALE)), method="bounded").x))


def conformal_quantiles(y: np.ndarray, raw: np.ndarray, edges, level: float, min_rows: int = 30) -> list[float]:
    """Split-conformal |residual| quantile per predicted-band bin (Mondrian); a bin with too few validation
    rows falls back to the pooled quantile."""
    def quantile(residuals):
        q = min(1.0, np.ceil((len(residuals) + 1) * level) / len(residuals))
        return float(np.quantile(residuals, q, method="higher"))

    residuals = np.abs(y - raw)
    pooled = quantile(residuals)
    bins = np.searchsorted(np.asarray(edges), bands_from_raw(raw), side="right")
    return [quantile(residuals[bins == k]) if (bins == k).sum() >= min_rows else pooled
            for k in range(len(edges) + 1)]


def _naive_pooling(m: Matrices) -> Matrices:
    """W&I rows read as IELTS bands (fixed table), under the IELTS head."""
    from dataclasses import replace

    wi = m.source == "wi"
    return replace(m, source=np.where(wi, "ielts", m.source),
                   ordinal=np.where(wi, NAIVE_WI_TO_IELTS[np.clip(m.ordinal, 0, 11)], m.ordinal))


def fit_scoring_model(m: Matrices, train: np.ndarray, val: np.ndarray, pca_components: int | None,
                      cfg: FitConfig = FitConfig(), features: list[int] | None = None) -> ScoringModel:
    """``features`` selects handcrafted columns (baselines, ablations; ``word_count`` is always kept, for the
    length term); ``pca_components`` as in Preprocessor.fit (0: no embeddings)."""
    wc = m.feature_names.index("word_count")
    if features is not None and wc not in features:
        features = [wc, *features]
    names = m.feature_names if features is None else [m.feature_names[i] for i in features]
    use_embeddings = pca_components != 0
    hand_tr, emb_tr, _ = m.rows(train, features, use_embeddings)
    hand_va, emb_va, _ = m.rows(val, features, use_embeddings)
    pre = Preprocessor.fit(names, hand_tr, emb_tr, pca_components)
    x_tr, x_va = pre.transform(hand_tr, emb_tr), pre.transform(hand_va, emb_va)
    model_names = pre.output_names
    proxies = LENGTH_PROXIES if cfg.block_length_proxies else frozenset()
    linear_cols = np.array([n not in proxies for n in model_names])
    if cfg.harmonisation not in HARMONISATIONS:
        raise ValueError(f"harmonisation {cfg.harmonisation!r}: choose from {HARMONISATIONS}")
    task2 = m.source == "ielts"  # IELTS Task 2 answers: the under-length rule applies to them alone
    if cfg.harmonisation == "naive":
        m = _naive_pooling(m)
    sources = [s for s in ("ielts", "wi") if (m.source[train] == s).any()]

    linear, under_weight, heads = _fit_linear(x_tr[:, linear_cols], m.n_words[train], m.source[train],
                                              m.ordinal[train], cfg, sources, task2[train])
    full_w = np.zeros(len(model_names))
    full_w[linear_cols] = linear.weights
    linear = LinearPart(full_w, linear.intercept, linear.length_weight)

    def base(x, rows):
        return _observed_eta(linear(x, m.n_words[rows]), m.n_words[rows], task2[rows], under_weight)

    weights_tr = source_weights(m.source[train], sources, cfg.source_balance)
    # validation rows of a source the training rows lack carry no head: early stopping ignores them
    keep_va = np.isin(m.source[val], sources)
    booster = _fit_trees(x_tr, base(x_tr, train), m.source[train], m.ordinal[train],
                         x_va[keep_va], base(x_va, val)[keep_va], m.source[val][keep_va], m.ordinal[val][keep_va],
                         heads, model_names, cfg.trees, weights_tr, proxies)
    trees = booster if isinstance(booster, LightGBMTrees) else XGBoostTrees(booster)
    model = ScoringModel(pre, trees, linear, under_weight,
                         conformal_edges=list(cfg.conformal_edges), interval_level=cfg.interval_level,
                         source_cuts={s: h.cuts.tolist() for s, h in heads.items() if s != "ielts"},
                         source_scales={s: h.scale for s, h in heads.items()})
    ielts_va = val[task2[val]]
    if len(ielts_va):
        x_iv = x_va[task2[val]]
        raw = np.clip(model.predict(x_iv).raw, 0, MAX_BAND)
        model.scale = _calibrate_scale(raw, m.band[ielts_va])
        model.conformal_quantiles = conformal_quantiles(m.band[ielts_va], raw, cfg.conformal_edges,
                                                        cfg.interval_level)
    return model


def predict_rows(model: ScoringModel, m: Matrices, index: np.ndarray, features: list[int] | None = None):
    wc = m.feature_names.index("word_count")
    if features is not None and wc not in features:
        features = [wc, *features]
    hand, emb, _ = m.rows(index, features, model.preprocessor.embedding_dim > 0)
    return model.predict(model.transform(hand, emb))


__all__ = ["HALF_BANDS", "LENGTH_PROXIES", "FitConfig", "Matrices", "TreeConfig", "asdict", "conformal_quantiles",
           "fit_scoring_model", "ordinal_grad_hess", "predict_rows"]
