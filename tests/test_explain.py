import numpy as np
import pytest

from essayscore.essay_scorer import EssayScorer
from essayscore.explain import SEMANTIC_GROUP, Explainer
from essayscore.features import GROUPS
from essayscore.scoring_model import length_term

pytestmark = pytest.mark.slow  # every test scores with the session's trained artifact


@pytest.fixture(scope="module")
def scored(trained_artifact, shared_essays):
    scorer = EssayScorer(trained_artifact)
    rows = shared_essays.sample(4, random_state=7)
    return scorer.score(list(rows["essay"]), list(rows["prompt"]))


def test_shap_values_are_additive_and_match_the_band_output(trained_artifact, scored):
    explainer = Explainer(trained_artifact)
    x = np.stack([s.feature_vector for s in scored])
    explanations = explainer.explain(x, np.stack([s.handcrafted for s in scored]))
    for s, e in zip(scored, explanations):
        assert e["output"] == pytest.approx(s.ielts_raw, abs=1e-4)
        assert e["base_value"] + sum(e["groups"].values()) == pytest.approx(s.ielts_raw, abs=1e-4)
        assert set(e["groups"]) <= set(GROUPS) | {SEMANTIC_GROUP}
        for f in e["top_features"]:
            assert f["description"] and f["direction"] == ("raises" if f["contribution"] > 0 else "lowers")
        magnitudes = [abs(f["contribution"]) for f in e["top_features"]]
        assert magnitudes == sorted(magnitudes, reverse=True)


def test_native_contributions_equal_shap_tree_explainer(trained_artifact, scored):
    shap = pytest.importorskip("shap")
    explainer = Explainer(trained_artifact)
    x = np.stack([s.feature_vector for s in scored])
    native, base = explainer.tree_contributions(x)
    reference = shap.TreeExplainer(explainer.booster)
    np.testing.assert_allclose(native, reference.shap_values(x), atol=1e-4)
    np.testing.assert_allclose(base, np.full(len(x), reference.expected_value), atol=1e-4)
    # the linear part's exact SHAP values (z-scored features: the training mean is 0), and the length terms
    total, total_base, adjustment = explainer.contributions(x)
    model = explainer.model
    linear = np.nan_to_num(x.astype(np.float64)) * model.linear.weights
    length = model.linear.length_weight * length_term(model.words(x)) + adjustment
    w = explainer.word_index
    np.testing.assert_allclose(np.delete(total - native - linear, w, axis=1), 0, atol=1e-6)
    np.testing.assert_allclose((total - native - linear)[:, w], length, atol=1e-6)
    np.testing.assert_allclose(total_base, base + model.linear.intercept, atol=1e-6)


def test_an_off_scale_score_stays_additive_with_the_clipped_amount_shown(trained_artifact):
    """A very weak, very short text can fall below band 0 before clipping: the explanation reports what the
    0-9 scale cut off, so its groups still add up to ielts_raw."""
    scorer = EssayScorer(trained_artifact)
    explainer = Explainer(trained_artifact)
    texts = ["i like sport. sport is good. i play football every day with my friend. football is fun",
             "me go school. me no like. teacher bad. home good."]
    for s in scorer.score(texts):
        e = explainer.explain(s.feature_vector[None], s.handcrafted[None])[0]
        unclipped = float(
            explainer.contributions(s.feature_vector[None])[1][0]
            + explainer.contributions(s.feature_vector[None])[0].sum()
        )
        assert e["base_value"] + sum(e["groups"].values()) == pytest.approx(s.ielts_raw, abs=1e-4)
        assert e["output"] == pytest.approx(s.ielts_raw, abs=1e-4)
        assert ("scale_limit" in e["groups"]) == (not 0.0 <= unclipped <= 9.0)
