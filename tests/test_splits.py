import numpy as np
import pandas as pd

from training.splits import assign_splits, cv_folds, prompt_groups


def test_paraphrased_prompts_share_a_group_and_different_topics_do_not():
    prompts = pd.Series([
        (
            "Children find it difficult to concentrate on or pay attention to school. What are the reasons? "
            "How can we solve this problem?"
        ),
        (
            "Children find it difficult to pay attention or concentrate on school study. What are the reasons? "
            "How can we solve this problem?"
        ),
        (
            "Some people believe that governments should spend money on public transport rather than roads. "
            "Discuss both views."
        ),
    ])
    groups = prompt_groups(prompts)
    assert groups[0] == groups[1] != groups[2]


def test_splits_are_grouped_deterministic_and_stratified(shared_essays):
    manifest = assign_splits(shared_essays)
    again = assign_splits(shared_essays.sample(frac=1.0, random_state=1).reset_index(drop=True))
    # deterministic: the same essay lands in the same split whatever the row order
    assert manifest.set_index("essay_id")["split"].to_dict() == again.set_index("essay_id")["split"].to_dict()
    # no prompt (nor paraphrase cluster) in two splits
    assert manifest.groupby("group")["split"].nunique().max() == 1
    by_exact_prompt = shared_essays.assign(split=manifest["split"]).groupby("prompt")["split"].nunique()
    assert by_exact_prompt.max() == 1
    shares = manifest["split"].value_counts(normalize=True)
    assert 0.6 < shares["train"] < 0.8 and 0.1 < shares["validation"] < 0.25 and 0.1 < shares["test"] < 0.25
    # stratified as far as grouping allows: every split holds every CEFR level and origin
    joined = shared_essays.assign(split=manifest["split"])
    assert (joined.groupby("split")["cefr"].nunique() == 6).all()
    assert (joined.groupby("split")["origin"].nunique() == 4).all()


def test_cv_folds_partition_the_data_without_group_leakage(shared_essays):
    groups = prompt_groups(shared_essays["prompt"])
    held_out_all = []
    for fit, val, held in cv_folds(shared_essays, n_folds=5):
        assert not set(groups[held]) & set(groups[fit]) and not set(groups[held]) & set(groups[val])
        assert not set(groups[fit]) & set(groups[val])
        held_out_all.append(held)
    assert np.array_equal(np.sort(np.concatenate(held_out_all)), np.arange(len(shared_essays)))
