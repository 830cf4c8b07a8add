"""The learned error detector: labels from the gold edits, and a real detector trained on the W&I corrections
that finds planted errors in crafted sentences, shipped and reloaded from its file."""

import numpy as np
import pytest

from essayscore.error_detector import CLASSES, ErrorDetector, tokenize
from training import error_detector as ed
from training.sources import load_wi_edits


def test_gold_edits_become_token_classes():
    text = "She go to scool , and she like it it ."
    edits = [[4, 6, "goes"], [10, 15, "school"], [16, 17, ""], [33, 36, ""], [26, 30, "likes"], [0, 0, "Today "]]
    tokens, labels = ed.token_labels(text, edits)
    by_word = {t.text + str(t.start): CLASSES[k] for t, k in zip(tokens, labels)}
    assert by_word["go4"] == "grammar" and by_word["scool10"] == "spelling"
    assert by_word[",16"] == "punctuation"  # a deleted comma is a punctuation correction
    assert by_word["like26"] == "grammar" and by_word["it34"] == "unnecessary" and by_word["it31"] == "correct"
    assert by_word["She0"] == "missing"  # an insertion marks the token that follows it
    assert by_word["to7"] == "correct"
    assert ed.edit_class("recieve", "receive") == "spelling" and ed.edit_class("a", "an") == "grammar"
    assert ed.edit_class("", ",") == "punctuation" and ed.edit_class("it", None) == "grammar"


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> ErrorDetector:
    """Trained for real on every shared W&I text with gold corrections (about 15 s), saved and reloaded."""
    texts = load_wi_edits()
    tagged = ed.TaggedTexts.build(texts)
    trained = ed.fit(tagged, np.arange(len(tagged.ids)))
    path = tmp_path_factory.mktemp("detector") / "error_detector.npz"
    trained.save(path)
    return ErrorDetector.load(path)


def error_probability(detector: ErrorDetector, text: str, word: str) -> float:
    tokens, p = detector.tag(text)
    return float(1 - p[[t.text for t in tokens].index(word), 0])


@pytest.mark.parametrize("wrong, right, word_wrong, word_right", [
    ("Yesterday she go to the market with her mother.", "Yesterday she went to the market with her mother.",
     "go", "went"),
    ("I recieved your letter and I was very happy.", "I received your letter and I was very happy.",
     "recieved", "received"),
    ("There are many informations about it on the internet.", "There is much information about it on the internet.",
     "informations", "information"),
    ("He have two brothers and one sister.", "He has two brothers and one sister.", "have", "has"),
    ("My freind lives in a big city near the sea.", "My friend lives in a big city near the sea.", "freind", "friend"),
])
def test_planted_errors_are_flagged_where_the_correction_is_not(detector, wrong, right, word_wrong, word_right):
    assert error_probability(detector, wrong, word_wrong) > error_probability(detector, right, word_right) + 0.1


def test_misspellings_are_typed_as_spelling_and_stand_out_from_their_sentence(detector):
    tokens, p = detector.tag("I recieved your leter becuase of the problem.")
    words = [t.text for t in tokens]
    correct = [1 - p[words.index(w), 0] for w in ("I", "your", "of", "the", "problem")]
    for word in ("recieved", "leter", "becuase"):
        row = p[words.index(word)]
        kinds = [CLASSES[k + 1] for k in np.argsort(-row[1:])]
        assert "spelling" in kinds[:2], (word, kinds)  # among the two most likely kinds of correction
        assert 1 - row[0] > max(correct) and 1 - row[0] > 2 * np.mean(correct)


def test_error_density_features_rise_with_planted_errors(detector):
    clean = ("I think that public transport is important for every city. It reduces traffic and pollution, and "
             "it helps people who cannot drive. Therefore, governments should invest more money in buses and trains.")
    broken = ("I thinks that public transport are important for every citys. It reduce trafic and polution, and "
              "it help peoples who can not drives. Therefor, goverments should invests more moneys in bus and train.")
    f_clean, f_broken = detector.density_features(clean), detector.density_features(broken)
    assert len(f_clean) == 7
    assert f_broken[0] > f_clean[0] + 10  # expected corrections per 100 words
    assert f_broken[1] > f_clean[1]  # spelling
    assert f_broken[6] <= f_clean[6]  # share of clean sentences
    assert detector.density_features("") == [0.0] * 6 + [1.0]
    assert [t.text for t in tokenize("Don't stop, it's 5 o'clock!")][:3] == ["Don't", "stop", ","]


def test_held_out_writers_score_above_chance(detector):
    texts = load_wi_edits()
    tagged = ed.TaggedTexts.build(dict(list(texts.items())[:600]))
    folds = ed.writer_folds([str(i % 97) for i in range(len(tagged.ids))], k=3)
    model = ed.fit(tagged, np.flatnonzero(folds != 0))
    scores = ed.token_scores(model, tagged, np.flatnonzero(folds == 0))
    # a real signal: far more precise than guessing at the base rate, and counts that track the gold counts
    assert scores["precision"] > 2 * scores["error_token_share"] and scores["text_count_pearson"] > 0.4
