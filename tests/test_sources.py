"""Sources: the shared IELTS and W&I files load with their original labels, one inventory names their licences,
and splits keep writers and prompt topics apart."""

import numpy as np
import pytest

from training.sources import (
    IELTS_LEVELS,
    SOURCES,
    WI_LEVELS,
    inventory,
    licence_summary,
    load_sources,
    load_wi,
    load_wi_edits,
    parse_sources,
)
from training.splits import assign_splits, cv_folds, row_groups


@pytest.fixture(scope="module")
def both():
    return load_sources(("ielts", "wi")).essays


def test_both_sources_load_every_row_with_their_original_labels(both):
    counts = both.groupby("source").size().to_dict()
    assert counts == {"ielts": 1628, "wi": 2384}
    wi = both[both["source"] == "wi"]
    # the README's level counts (C2+ counts as C2.ii, the top of the scale)
    assert wi["cefr"].value_counts().to_dict() == {"A1": 430, "A2": 690, "B1": 477, "B2": 318, "C1": 332, "C2": 137}
    assert set(wi["level_label"]) == set(WI_LEVELS) and wi["band"].isna().all() and (wi["prompt"] == "").all()
    assert (wi["level_ordinal"] == wi["level_label"].map(WI_LEVELS.index)).all()
    ielts = both[both["source"] == "ielts"]
    assert (
        ielts["level_label"].value_counts()["<4"] == 60 and (ielts["band"][ielts["level_label"] == "<4"] == 3.5).all()
    )
    assert (ielts["level_ordinal"] == ielts["level_label"].map(IELTS_LEVELS.index)).all()
    assert both["essay_id"].is_unique
    # W&I's own level, kept beside the band-derived CEFR of IELTS rows
    assert set(both["cefr"]) == {"A1", "A2", "B1", "B2", "C1", "C2"}


def test_inventory_names_every_source_with_size_label_type_and_licence(both):
    rows = {r["key"]: r for r in inventory(both)}
    assert rows["wi"]["texts"] == 2384 and rows["wi"]["label_type"] == "cefr_sublevel"
    assert rows["wi"]["commercial_use"] is False and "non-commercial" in rows["wi"]["licence"]
    assert rows["ielts"]["texts"] == 1628 and rows["ielts"]["label_type"] == "ielts_half_band"
    assert "non-commercial" in licence_summary(("ielts", "wi")) and "wi" in licence_summary(("ielts", "wi"))
    assert "non-commercial" not in licence_summary(("ielts",))


def test_source_selection_is_validated():
    assert parse_sources("ielts") == ("ielts",) and parse_sources(None) == ("ielts", "wi")
    assert parse_sources("ielts, wi,ielts") == ("ielts", "wi")
    with pytest.raises(ValueError, match="unknown source"):
        parse_sources("ielts,toefl")
    with pytest.raises(ValueError, match="anchors the band scale"):
        parse_sources("wi")
    assert set(load_sources(("ielts",)).essays["source"]) == {"ielts"}
    assert set(SOURCES) == {"ielts", "wi"}


def test_gold_edits_are_character_offsets_into_the_text():
    edits = load_wi_edits()
    text, spans = next(iter(edits.values()))
    assert len(edits) == 2384 and spans
    for start, end, replacement in spans:
        assert 0 <= start <= end <= len(text) and (replacement is None or isinstance(replacement, str))


def test_bad_wi_rows_are_rejected_with_a_reason(tmp_path):
    path = tmp_path / "wi.jsonl"
    path.write_text('{"id": "1", "userid": "u", "cefr": "B1.i", "text": "I like it here.", "edits": []}\n'
                    '{"id": "2", "userid": "u", "cefr": "Z9", "text": "Some text.", "edits": []}\n'
                    '{"id": "3", "userid": "v", "cefr": "A1.i", "text": "   ", "edits": []}\n'
                    '{"id": "4", "userid": "w", "cefr": "C2+", "text": "Fine prose.", "edits": []}\n')
    loaded = load_wi(path)
    assert list(loaded.essays["level_label"]) == ["B1.i", "C2.ii"]
    assert dict(zip(loaded.rejected["row"], loaded.rejected["reason"])) == {1: "unparsable level", 2: "empty essay"}


def test_splits_group_writers_and_prompt_topics_without_leakage(both):
    manifest = assign_splits(both)
    joined = both.assign(split=manifest["split"].to_numpy(), group=manifest["group"].to_numpy())
    wi = joined[joined["source"] == "wi"]
    assert wi.groupby("writer")["split"].nunique().max() == 1  # no writer in two splits
    assert joined.groupby("group")["split"].nunique().max() == 1
    ielts = joined[joined["source"] == "ielts"]
    assert ielts.groupby("prompt")["split"].nunique().max() == 1
    # writers and prompt clusters never share a group id
    assert not set(wi["group"]) & set(ielts["group"])
    # both sources and every CEFR level in every split
    assert (joined.groupby("split")["source"].nunique() == 2).all()
    assert (joined.groupby(["split", "source"])["cefr"].nunique() == 6).all()
    groups = row_groups(both)
    seen = []
    for fit, val, held in cv_folds(both, 5):
        assert not set(groups[held]) & (set(groups[fit]) | set(groups[val]))
        seen.append(held)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(len(both)))
