"""essayscore.essay_warnings on planted cases: too short, off-topic (from the handcrafted prompt features),
not English."""

from __future__ import annotations

import numpy as np
import pytest

from essayscore import essay_warnings as w
from essayscore.features.registry import FEATURE_INDEX, FEATURES

ENGLISH = ("Many people believe that children should learn a foreign language at primary school. In my opinion this "
           "is a good idea, because young children learn new words quickly and without fear. However, teachers "
           "must be well trained and schools need enough money to buy books. ") * 4
FRENCH = ("Aujourd'hui, beaucoup de gens pensent que les enfants devraient apprendre une langue étrangère dès "
          "l'école primaire. À mon avis, c'est une excellente idée, car les jeunes enfants apprennent plus "
          "facilement. Cependant, il faut aussi reconnaître que les enseignants ne sont pas toujours bien formés.")
GERMAN = ("Heutzutage glauben viele Menschen, dass Kinder schon in der Grundschule eine Fremdsprache lernen sollten. "
          "Meiner Meinung nach ist das eine sehr gute Idee, weil junge Kinder viel leichter lernen. Allerdings muss "
          "man auch zugeben, dass die Lehrer nicht immer gut ausgebildet sind.")
SPANISH = ("Hoy en día, mucha gente piensa que los niños deberían aprender un idioma extranjero desde la escuela "
           "primaria. En mi opinión, es una idea excelente, porque los niños pequeños aprenden con más facilidad. "
           "Sin embargo, también hay que reconocer que los profesores no siempre están bien formados.")
GIBBERISH = "asdkj qwpoe zmxnv lkjhg poiuy trewq mnbvc xzlkj hgfds aqwsx edcrf vtgby hnujm ikolp qazws xedcv rfvtg"


def hand(cosine: float = np.nan, coverage: float = np.nan) -> np.ndarray:
    values = np.zeros(len(FEATURES), dtype=np.float32)
    values[FEATURE_INDEX["prompt_essay_cosine"]] = cosine
    values[FEATURE_INDEX["prompt_keyword_coverage"]] = coverage
    return values


def codes(*args, **kwargs) -> set[str]:
    return {x.code for x in w.check(*args, min_words=150, **kwargs)}


def test_clean_english_essay_has_no_warnings() -> None:
    assert codes(ENGLISH, "Should children learn a foreign language at school?", hand(0.7, 0.6)) == set()


def test_too_short() -> None:
    short = "Schools are good. Children learn many useful things there."
    assert codes(short) == {"too_short"}
    assert codes(" ".join(["word"] * 149)) >= {"too_short"}
    assert "too_short" not in codes(" ".join(["school"] * 150))


@pytest.mark.parametrize("text", [FRENCH, GERMAN, SPANISH, GIBBERISH], ids=["french", "german", "spanish", "gibberish"])
def test_not_english(text) -> None:
    share, n = w.english_share(text)
    assert n >= w.ENGLISH_MIN_WORDS and share < w.ENGLISH_MIN_KNOWN_SHARE
    assert "not_english" in codes(text)


def test_english_with_typos_and_names_is_english() -> None:
    text = ENGLISH.replace("children", "childern").replace("teachers", "teachres") + " Paris, London and Tokyo."
    assert "not_english" not in codes(text)
    assert "not_english" not in codes("Hi there")  # too few words to judge


@pytest.mark.parametrize("cosine,coverage,flagged", [
    (0.10, 0.05, True),     # unrelated prompt
    (0.39, 0.24, True),     # just below both thresholds
    (0.30, 0.50, False),    # uses the prompt's key words
    (0.60, 0.10, False),    # paraphrases the prompt
    (np.nan, np.nan, False),
])
def test_off_topic_thresholds(cosine, coverage, flagged) -> None:
    assert ("off_topic" in codes(ENGLISH, "Some prompt", hand(cosine, coverage))) is flagged


def test_off_topic_needs_a_prompt() -> None:
    assert "off_topic" not in codes(ENGLISH, None, hand(0.0, 0.0))


def test_warning_dicts() -> None:
    (only,) = w.check("Too short.", min_words=150)
    assert only.to_dict() == {"code": "too_short", "message": only.message} and "150" in only.message
