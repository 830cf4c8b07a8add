"""The latent-scale model: exact ordinal gradients, coherent CEFR probabilities, bounded length, and per-source
cut points recovered from synthetic data with a known answer."""

import numpy as np
import pytest

from essayscore.bands import bands_to_cefr_index
from essayscore.scoring_model import (
    IELTS_CUTS,
    LENGTH_CEILING,
    LENGTH_FLOOR,
    bands_from_raw,
    cefr_distribution,
    length_term,
    under_length,
)
from training.fit import (
    CEFR_LATENT_BOUNDARIES,
    MAX_BAND_SCALE,
    FitConfig,
    Matrices,
    Ordinal,
    TreeConfig,
    fit_scoring_model,
    ordinal_grad_hess,
    ordinal_nll,
    predict_rows,
)


def test_ordinal_gradient_and_hessian_match_finite_differences():
    rng = np.random.default_rng(0)
    head = Ordinal(np.array([-1.0, 0.0, 0.5, 2.0]), 0.7)
    eta = rng.normal(0, 1.5, 200)
    k = rng.integers(0, 5, 200)
    g, h = ordinal_grad_hess(eta, k, head)
    eps = 1e-5
    g_num = (ordinal_nll(eta + eps, k, head) - ordinal_nll(eta - eps, k, head)) / (2 * eps)
    h_num = (ordinal_nll(eta + eps, k, head) - 2 * ordinal_nll(eta, k, head) + ordinal_nll(eta - eps, k, head)) / eps**2
    np.testing.assert_allclose(g, g_num, atol=1e-5)
    np.testing.assert_allclose(h, np.maximum(h_num, 1e-6), atol=2e-3)
    assert (h > 0).all()  # the cumulative-logit likelihood is convex in eta


@pytest.mark.parametrize("scale", [0.3, 0.6, MAX_BAND_SCALE])
def test_cefr_probabilities_are_coherent_with_the_reported_level(scale):
    raw = np.linspace(0, 9, 901)
    p = cefr_distribution(raw, scale)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    level = bands_to_cefr_index(bands_from_raw(raw))
    top = np.argsort(-p, axis=1)
    second = np.take_along_axis(p, top[:, 1:2], axis=1)[:, 0]
    meaningful = second > 1e-9  # far out, every other level has probability ~0 and ties
    assert (np.abs(top[meaningful, 0] - top[meaningful, 1]) == 1).all()  # the two most likely levels are neighbours
    assert (np.abs(top[:, 0] - level) <= 1).all()
    # the reported level is the median of the distribution (its cumulative probability crosses one half there)
    cdf = np.cumsum(p, axis=1)
    median = np.argmax(cdf >= 0.5 - 1e-9, axis=1)
    assert np.mean(median == level) > 0.99  # exact up to the half-band grid's rounding ties


def test_length_enters_bounded():
    words = np.array([0, 30, LENGTH_FLOOR, 125, 250, LENGTH_CEILING, 2000])
    t = length_term(words)
    assert t[0] == t[1] == t[2] and t[-1] == t[-2] and np.all(np.diff(t) >= 0)
    assert t[4] == 0.0
    np.testing.assert_allclose(under_length(words), [1.0, 0.88, 0.76, 0.5, 0.0, 0.0, 0.0])


def _synthetic(n_ielts=900, n_wi=900, seed=0):
    """Latent proficiency from two signals (and length); IELTS labels are half bands of it, W&I labels are
    sub-levels cut at known points (level boundaries at the table's, sub-level cuts at the given ones)."""
    rng = np.random.default_rng(seed)
    n = n_ielts + n_wi
    signals = rng.normal(size=(n, 2))
    words = np.exp(rng.uniform(np.log(80), np.log(450), n))
    eta = 6.0 + 1.0 * signals[:, 0] - 0.6 * signals[:, 1] + 0.5 * length_term(words)
    noisy = eta + rng.logistic(0, 0.25, n)
    source = np.array(["ielts"] * n_ielts + ["wi"] * n_wi)
    ielts_ord = np.searchsorted(IELTS_CUTS, noisy, side="right")
    sub = [3.2, 4.25, 5.1, 6.4, 7.2, 8.8]  # true sub-level cuts: inside each level, and below A1 | above C2
    true_cuts = np.sort(np.concatenate([CEFR_LATENT_BOUNDARIES, sub]))
    wi_ord = np.searchsorted(true_cuts, noisy, side="right")
    ordinal = np.where(source == "ielts", ielts_ord, wi_ord)
    band = np.where(source == "ielts", 3.5 + 0.5 * ielts_ord, np.nan)
    hand = np.column_stack([words, signals]).astype(np.float32)
    m = Matrices(["word_count", "signal_up", "signal_down"], hand, np.zeros((n, 0), np.float32), band, source,
                 ordinal, words)
    return m, true_cuts


@pytest.mark.parametrize("harmonisation", ["anchored", "free"])
def test_per_source_cut_points_are_recovered(harmonisation):
    m, true_cuts = _synthetic()
    rows = np.arange(len(m.band))
    train, val = rows[rows % 5 != 0], rows[rows % 5 == 0]
    model = fit_scoring_model(m, train, val, 0, FitConfig(harmonisation=harmonisation,
                                                          trees=TreeConfig(max_rounds=0)))
    cuts = np.asarray(model.source_cuts["wi"])
    assert np.all(np.diff(cuts) > 0)
    np.testing.assert_allclose(cuts[1:-1], true_cuts[1:-1], atol=0.25)
    np.testing.assert_allclose(cuts[[0, -1]], true_cuts[[0, -1]], atol=0.6)  # few texts out there
    if harmonisation == "anchored":
        np.testing.assert_allclose(cuts[[1, 3, 5, 7, 9]], CEFR_LATENT_BOUNDARIES)  # exactly the table's
    pred = predict_rows(model, m, val)
    ielts = m.source[val] == "ielts"
    assert np.corrcoef(pred.raw[ielts], m.band[val][ielts])[0, 1] > 0.9
    assert 0.0 < model.linear.length_weight <= 0.75  # recovered, within its bound


def test_cefr_follows_proficiency_and_the_band_carries_the_task2_rule():
    m, _ = _synthetic(seed=1)
    rows = np.arange(len(m.band))
    model = fit_scoring_model(
        m, rows[rows % 4 != 0], rows[rows % 4 == 0], 0, FitConfig(trees=TreeConfig(max_rounds=20))
    )
    model.under_length_weight = -2.0
    short = np.array([[100.0, 1.0, -1.0]], dtype=np.float32)
    x = model.transform(short, None)
    pred = model.predict(x)
    assert pred.length_adjustment[0] == pytest.approx(-2.0 * 0.6)
    assert pred.raw[0] == pytest.approx(pred.proficiency[0] + pred.length_adjustment[0])
    assert pred.cefr_index[0] == bands_to_cefr_index(bands_from_raw(pred.proficiency))[0]
    assert pred.band[0] < bands_from_raw(pred.proficiency)[0]
    # the interval stays on the bands the model can report, even for a very weak text
    weak = model.predict(model.transform(np.array([[30.0, -6.0, 6.0]], dtype=np.float32), None))
    assert weak.band[0] == 3.5 and weak.band_low[0] == 3.5 <= weak.band_high[0]
