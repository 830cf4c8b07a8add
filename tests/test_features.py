"""Feature registry and extraction with the real components (spaCy, harper-py, pyspellchecker, textstat,
wordfreq), on crafted essays whose properties are known."""

from __future__ import annotations

import re

import numpy as np
import pytest

from essayscore.features import (
    FEATURES,
    GROUPS,
    FeatureExtractor,
    FeatureResult,
    FeatureSpec,
    GrammarMatch,
    add_embedding_features,
    feature_names,
)
from essayscore.features.registry import FEATURE_INDEX, GROUP_MODULES

PROMPT = (
    "Some people believe that governments should spend more money on public transport, while others think "
    "that building new roads is more important. Discuss both views and give your own opinion."
)

ESSAY = (
    "Traffic congestion has become a serious problem in many cities. Some people argue that governments should "
    "invest in public transport, while others believe that new roads are the better solution. In my opinion, "
    "public transport deserves most of the funding.\n\n"
    "On the one hand, building roads can reduce journey times in the short term. For example, a new motorway may "
    "allow goods to reach markets more quickly, which supports the local economy. However, new roads often attract "
    "more cars, so the congestion soon returns.\n\n"
    "On the other hand, public transport moves large numbers of people efficiently. A single train can carry "
    "hundreds of passengers, and buses produce far less pollution per person than private cars. Furthermore, cheap "
    "and reliable services help people who cannot afford a car to reach schools, hospitals and jobs. As a result, "
    "investment in transport networks benefits the whole community rather than only drivers.\n\n"
    "In conclusion, although roads remain necessary, I believe that governments should spend more on trains and "
    "buses because they are cleaner, fairer and more effective in the long run."
)

UNRELATED = (
    "Cooking at home is one of the most rewarding hobbies a person can have. Preparing a meal from fresh "
    "vegetables teaches patience and creativity. Many families enjoy baking bread together at the weekend, and "
    "children learn to measure flour and sugar carefully. Recipes passed down from grandparents keep cultural "
    "traditions alive. In conclusion, home cooking brings people together around the kitchen table."
)


@pytest.fixture(scope="module")
def fx() -> FeatureExtractor:
    return FeatureExtractor()  # spaCy and the embedded checker load once per process (module-level caches)


# A learned error detector with no weights and a bias that makes "correct" the likeliest class: every token gets
# the same, known class probabilities (a trained one is tested in test_error_detector.py).
FLAT_BIAS = np.array([4.0, -3.0, -3.0, -4.0, -4.0, -4.0], dtype=np.float32)


@pytest.fixture(scope="module")
def fx_detector(fx) -> FeatureExtractor:
    from essayscore.error_detector import CLASSES, HASH_BITS, ErrorDetector

    detector = ErrorDetector(np.zeros((1 << HASH_BITS, len(CLASSES)), dtype=np.float32), FLAT_BIAS)
    return FeatureExtractor(checker=fx.checker, error_detector=detector)


def f(values: np.ndarray, name: str) -> float:
    return float(values[FEATURE_INDEX[name]])


# --- registry ---------------------------------------------------------------------------------------------------


def test_registry_is_complete_and_valid():
    names = feature_names()
    assert len(FEATURES) >= 50
    assert len(set(names)) == len(names) == len(FEATURES)
    assert all(isinstance(s, FeatureSpec) for s in FEATURES)
    for spec in FEATURES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), spec.name
        assert spec.group in GROUPS
        assert spec.description.strip() and "\n" not in spec.description
    assert {s.group for s in FEATURES} == set(GROUPS)
    assert [s.name for s in FEATURES if s.needs_embeddings] == ["prompt_essay_cosine"]
    # registry order = vector order, groups contiguous in GROUPS order
    groups_in_order = [s.group for s in FEATURES]
    assert sorted(groups_in_order, key=GROUPS.index) == groups_in_order
    # paragraph counts must not be features (formatting differs by source)
    assert not any("paragraph" in n for n in names)


def test_every_group_computes_exactly_its_features(fx):
    analysis, _ = fx._analysis(ESSAY, PROMPT)
    for module in GROUP_MODULES:
        assert set(module.compute(analysis)) == {e[0] for e in module.SPECS}, module.GROUP


# --- extraction contract ----------------------------------------------------------------------------------------


def test_extract_shape_dtype_and_documented_nans(fx):
    res = fx.extract(ESSAY, PROMPT)
    assert isinstance(res, FeatureResult)
    assert res.values.dtype == np.float32 and res.values.shape == (len(FEATURES),)
    nan_names = {n for n, v in zip(feature_names(), res.values) if not np.isfinite(v)}
    learned = {s.name for s in FEATURES if s.group == "learned_errors"}  # no error detector loaded
    assert nan_names == {"prompt_essay_cosine"} | learned
    assert all(isinstance(m, GrammarMatch) for m in res.matches)

    no_prompt = fx.extract(ESSAY).values
    prompt_names = {s.name for s in FEATURES if s.group == "prompt_alignment"}
    assert {n for n, v in zip(feature_names(), no_prompt) if np.isnan(v)} == prompt_names | learned
    # everything outside the prompt group is independent of the prompt
    other = [i for i, s in enumerate(FEATURES) if s.group != "prompt_alignment"]
    np.testing.assert_array_equal(no_prompt[other], res.values[other])


def test_the_learned_error_columns_come_from_the_loaded_detector(fx, fx_detector):
    values = fx_detector.extract(ESSAY, PROMPT).values
    learned = [i for i, s in enumerate(FEATURES) if s.group == "learned_errors"]
    p = 1 / (1 + np.exp(-FLAT_BIAS))
    p = p / p.sum()
    # every token gets the same class probabilities: per-100-word rates are 100 x share x tokens / words
    assert np.isfinite(values[learned]).all() and values[learned][0] > 0
    assert values[learned][1] / values[learned][0] == pytest.approx(p[1] / (1 - p[0]), rel=1e-4)
    assert values[learned][6] == 1.0  # no token reaches 0.5: every sentence is clean
    other = [i for i in range(len(FEATURES)) if i not in learned]
    np.testing.assert_array_equal(values[other], fx.extract(ESSAY, PROMPT).values[other])


def test_extract_many_matches_extract(fx):
    essays = [ESSAY, UNRELATED, "Short one."]
    prompts = [PROMPT, None, PROMPT]
    x, matches = fx.extract_many(essays, prompts)
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32
    for i, (e, p) in enumerate(zip(essays, prompts)):
        single = fx.extract(e, p)
        np.testing.assert_allclose(x[i], single.values, rtol=1e-5, atol=1e-6, equal_nan=True)
        assert matches[i] == single.matches
    with pytest.raises(ValueError):
        fx.extract_many(essays, prompts[:2])


@pytest.mark.parametrize(
    "text",
    ["", "word", "ALL CAPS ESSAY WITHOUT ANY PUNCTUATION AT ALL " * 20, "!!! ??? ...", "\U0001f600 \u2026 \u00e9",
     "no punctuation here just words " * 1000],
    ids=["empty", "one-word", "all-caps", "punct-only", "emoji", "5000-words"],
)
def test_weird_inputs_do_not_raise_and_stay_finite(fx_detector, text):
    values = fx_detector.extract(text, PROMPT).values
    finite = np.isfinite(values)
    assert not finite[FEATURE_INDEX["prompt_essay_cosine"]]
    finite[FEATURE_INDEX["prompt_essay_cosine"]] = True
    assert finite.all(), [n for n, ok in zip(feature_names(), finite) if not ok]


# --- formatting robustness --------------------------------------------------------------------------------------


def _variants(text: str) -> dict[str, str]:
    paras = text.split("\n\n")
    curly = re.sub(r"'", "\u2019", text)
    curly = re.sub(r"\bIn my opinion, ", "In my opinion,\u00a0 ", curly)
    return {
        "blank_lines": text,
        "single_newlines": "\n".join(paras),
        "no_newlines": " ".join(paras),
        "crlf_indented": "\r\n\r\n".join("\t" + p + "  " for p in paras),
        "curly_odd_spaces": "  " + curly.replace(". ", ".  ").replace(", ", " , ") + "\n",
    }


def test_formatting_does_not_change_features(fx):
    essay = ESSAY.replace("cannot", "can't").replace("whole community", "community's whole life")
    vectors = {k: fx.extract(v, PROMPT) for k, v in _variants(essay).items()}
    base = vectors["blank_lines"].values
    for name, res in vectors.items():
        np.testing.assert_allclose(res.values, base, rtol=1e-4, atol=1e-4, equal_nan=True, err_msg=name)
        assert len(res.matches) == len(vectors["blank_lines"].matches), name


# --- each group on crafted essays -------------------------------------------------------------------------------


def test_length_structure(fx):
    short = "Cars are bad. Buses are good. Trains are fast. People like them. Cities need them."
    long = (
        "Cars that are driven through crowded city centres every morning are harmful to the air that residents "
        "breathe, and buses that run on clean electricity are a far better choice for people who travel to work. "
        "Trains that connect the suburbs with the centre are fast, and people who use them every day tend to "
        "like them because they are reliable and comfortable."
    )
    s, lg = fx.extract(short).values, fx.extract(long).values
    assert f(lg, "mean_sentence_length") > 2 * f(s, "mean_sentence_length")
    assert f(s, "sentence_count") == 5 and f(s, "word_count") == 15
    assert f(s, "below_min_length") > 0.9
    full = fx.extract(ESSAY).values
    assert f(full, "conclusion_marker") == 1 and f(full, "intro_position_marker") == 1
    assert f(fx.extract(UNRELATED.replace("In conclusion, ", "")).values, "conclusion_marker") == 0


def test_lexical_diversity_drops_with_repetition(fx):
    varied = fx.extract(ESSAY).values
    repetitive_text = " ".join(["Public transport is good and public transport is important."] * 25)
    repetitive = fx.extract(repetitive_text).values
    for name in (
        "unique_word_count", "ttr", "root_ttr", "mtld", "hdd", "mattr", "hapax_share", "content_lemma_root_ttr"
    ):
        assert f(repetitive, name) < f(varied, name), name
    assert f(repetitive, "maas") > f(varied, name="maas")


def test_lexical_sophistication(fx):
    simple = "I think it is good. It is very good for me. My mum and dad like it a lot. We go there a lot."
    academic = (
        "Consequently, the significant environmental impact of infrastructure policy requires a comprehensive "
        "analysis of alternative approaches and their economic implications."
    )
    s, a = fx.extract(simple).values, fx.extract(academic).values
    assert f(a, "mean_word_length") > f(s, "mean_word_length")
    assert f(a, "long_word_share") > f(s, "long_word_share")
    assert f(a, "mean_content_zipf") < f(s, "mean_content_zipf")
    assert f(a, "rare_word_share") > f(s, "rare_word_share")
    assert f(a, "awl_word_share") > f(s, "awl_word_share") and f(a, "awl_family_count") >= 6
    assert f(a, "nominalisation_rate") > f(s, "nominalisation_rate")


def test_readability(fx):
    easy = "The cat sat. The dog ran. We had fun. It was a nice day. The sun was hot."
    hard = (
        "Notwithstanding considerable institutional resistance, comprehensive infrastructural modernisation "
        "necessitates unprecedented intergovernmental coordination and sophisticated administrative capability."
    )
    e, h = fx.extract(easy).values, fx.extract(hard).values
    assert f(e, "flesch_reading_ease") > f(h, "flesch_reading_ease")
    for name in ("flesch_kincaid_grade", "gunning_fog", "smog_index", "coleman_liau_index", "dale_chall_score",
                 "automated_readability_index", "syllables_per_word", "polysyllable_share", "difficult_word_share"):
        assert f(h, name) > f(e, name), name


def test_planted_spelling_errors_raise_typo_rates(fx):
    clean = fx.extract(ESSAY)
    typo_text = (ESSAY.replace("government", "goverment").replace("believe", "beleive")
                 .replace("because", "becuase").replace("necessary", "neccessary").replace("pollution", "polution"))
    typo = fx.extract(typo_text)
    assert f(typo.values, "typos_per_100w") > f(clean.values, "typos_per_100w") + 1.0
    assert f(typo.values, "misspelt_word_share") > f(clean.values, "misspelt_word_share")
    assert f(typo.values, "error_rate_per_100w") > f(clean.values, "error_rate_per_100w")
    assert f(typo.values, "error_free_sentence_share") < f(clean.values, "error_free_sentence_share")
    # the matches point at the planted words in the text the caller passed
    flagged = {typo_text[m.offset : m.offset + m.length] for m in typo.matches if m.category == "TYPOS"}
    assert {"goverments", "beleive", "becuase", "neccessary", "polution"} <= flagged


def test_grammar_errors_raise_grammar_rates(fx):
    bad = ESSAY.replace("a serious problem", "a important problem").replace("the whole", "the the whole")
    b, c = fx.extract(bad).values, fx.extract(ESSAY).values
    assert f(b, "grammar_per_100w") > f(c, "grammar_per_100w")
    assert f(b, "redundancy_per_100w") > f(c, "redundancy_per_100w")
    assert f(b, "distinct_error_types") > f(c, "distinct_error_types")


def test_syntactic_complexity(fx):
    simple = "The city is big. It has many cars. The air is dirty. People walk to work. Buses are slow."
    complex_ = (
        "Although the city, which has grown rapidly, is crowded, the roads that were built last year were "
        "designed by engineers who believed that traffic would fall because drivers would switch to trains. "
        "The new tunnel was opened by the mayor after it had been inspected by experts."
    )
    s, c = fx.extract(simple).values, fx.extract(complex_).values
    for name in ("mean_parse_depth", "clauses_per_sentence", "subordinate_clauses_per_sentence",
                 "relative_clauses_per_sentence", "complex_sentence_share", "passive_sentence_share",
                 "mean_dependency_distance"):
        assert f(c, name) > f(s, name), name
    assert f(s, "passive_sentence_share") == 0 and f(c, "passive_sentence_share") > 0.4


def test_connectives_raise_connective_rates(fx):
    plain = "Cars pollute the air. Trains are clean. Buses are cheap. People need jobs. Cities grow fast."
    linked = (
        "Firstly, cars pollute the air. However, trains are clean. Moreover, buses are cheap. For example, "
        "people need jobs. Therefore, cities grow fast. In conclusion, transport matters."
    )
    plain_vals, linked_vals = fx.extract(plain).values, fx.extract(linked).values
    for kind in ("additive", "contrast", "causal", "sequential", "exemplification", "conclusion"):
        assert f(linked_vals, f"connectives_{kind}_per_100w") > f(plain_vals, f"connectives_{kind}_per_100w") == 0, kind
    assert f(linked_vals, "connective_variety") == 6
    assert f(linked_vals, "connectives_per_100w") > 10 and f(plain_vals, "connectives_per_100w") == 0
    assert f(linked_vals, "sentence_initial_connective_share") == 1.0


def test_cohesion_overlap_pronouns_and_repetition(fx):
    linked = (
        "Public transport reduces pollution. Pollution from cars harms health. Poor health costs governments "
        "money. Governments should therefore fund public transport."
    )
    disjoint = "Public transport reduces pollution. My sister plays the violin. Volcanoes erupt lava. Penguins swim."
    a, b = fx.extract(linked).values, fx.extract(disjoint).values
    assert f(a, "adjacent_sentence_overlap") > f(b, "adjacent_sentence_overlap")
    assert f(a, "adjacent_sentence_similarity") > f(b, "adjacent_sentence_similarity")
    assert f(a, "sentence_essay_similarity") > f(b, "sentence_essay_similarity")
    pron = fx.extract("I think we should go. They told me that it was fine, and we agreed with them.").values
    assert f(pron, "pronoun_ratio") > f(a, "pronoun_ratio")
    assert f(pron, "first_person_rate") > f(a, "first_person_rate") == 0
    same_start = fx.extract("The car is fast. The bus is slow. The train is late. The road is busy.").values
    assert f(same_start, "sentence_opening_variety") == 0.25
    rep = fx.extract("Money money money is money. Money makes money for money.").values
    assert f(rep, "top_content_word_share") > f(a, "top_content_word_share")
    assert f(rep, "local_repetition_share") > f(a, "local_repetition_share")


def test_prompt_alignment(fx):
    on, off = fx.extract(ESSAY, PROMPT).values, fx.extract(UNRELATED, PROMPT).values
    for name in ("prompt_keyword_coverage", "essay_prompt_keyword_share", "prompt_lexical_similarity",
                 "intro_prompt_coverage"):
        assert f(on, name) > f(off, name) + 0.1, name
    copied = fx.extract(PROMPT + " " + ESSAY, PROMPT).values
    assert f(copied, "prompt_copy_share") > f(on, "prompt_copy_share")
    assert np.isnan(f(on, "prompt_essay_cosine"))


def test_add_embedding_features():
    rng = np.random.default_rng(0)
    n, dim = 3, 8
    values = np.zeros((n, len(FEATURES)), dtype=np.float32)
    values[:, FEATURE_INDEX["prompt_essay_cosine"]] = np.nan
    essay = rng.normal(size=(n, dim)).astype(np.float32)
    prompt = essay.copy()
    prompt[1] = -essay[1]
    prompt[2] = np.nan  # no prompt for this essay
    out = add_embedding_features(values, essay, prompt)
    col = out[:, FEATURE_INDEX["prompt_essay_cosine"]]
    assert out.shape == (n, len(FEATURES)) and out.dtype == np.float32
    np.testing.assert_allclose(col[:2], [1.0, -1.0], atol=1e-5)
    assert np.isnan(col[2])
    single = add_embedding_features(values[0].copy(), essay[0], None)
    assert single.shape == (len(FEATURES),) and np.isnan(single[FEATURE_INDEX["prompt_essay_cosine"]])
    one = add_embedding_features(values[0].copy(), essay[0], essay[0] * 2)
    assert one[FEATURE_INDEX["prompt_essay_cosine"]] == pytest.approx(1.0, abs=1e-5)


def test_cmudict_prepared_offline_in_nltk_format(tmp_path):
    import nltk
    from nltk.corpus.reader import CMUDictCorpusReader

    from essayscore import resources

    root = resources.ensure_cmudict(tmp_path)
    try:
        target = root / "corpora" / "cmudict" / "cmudict"
        mtime = target.stat().st_mtime_ns
        assert str(root) in nltk.data.path
        reader = CMUDictCorpusReader(str(target.parent), ["cmudict"])
        entries = dict(e for e, _ in zip(reader.entries(), range(200)))
        assert entries["'bout"] == ["B", "AW1", "T"]
        with target.open() as fh:
            lines = fh.read().splitlines()
        assert "CAT 1 K AE1 T" in lines and not any("#" in x or "(" in x for x in lines[:5000])
        assert resources.ensure_cmudict(tmp_path) == root  # idempotent: not rewritten
        resources._READY.discard(str(root))
        resources.ensure_cmudict(tmp_path)
        assert target.stat().st_mtime_ns == mtime
    finally:
        resources._READY.discard(str(root))
        while str(root) in nltk.data.path:
            nltk.data.path.remove(str(root))


def test_compact_cmudict_counts_the_syllables_nltks_dictionary_gives(tmp_path):
    """textstat counts the stressed phones of a word's first pronunciation in NLTK's cmudict; the compact table
    the features use instead (one int per word) has the same words and the same counts, and textstat's
    syllable counts of real essays are the same with either dictionary."""
    import nltk
    import textstat
    from nltk.corpus.reader import CMUDictCorpusReader
    from textstat.backend.counts import _count_syllables as counter

    from essayscore import resources
    from essayscore.features import readability

    root = resources.ensure_cmudict(tmp_path)
    try:
        full = CMUDictCorpusReader(str(root / "corpora" / "cmudict"), ["cmudict"]).dict()
    finally:
        resources._READY.discard(str(root))
        while str(root) in nltk.data.path:
            nltk.data.path.remove(str(root))
    compact = resources.SyllableDict(resources.syllable_counts())
    assert len(compact) == len(full) > 100_000
    wrong = [w for w, prons in full.items() if list(compact[w][0]) != ["1"] * sum(p[-1].isdigit() for p in prons[0])]
    assert not wrong, wrong[:10]
    with pytest.raises(KeyError):
        compact["notawordxyz"]

    readability._textstat()
    assert resources.use_compact_cmudict() and counter.get_cmudict("en_US") is not full
    try:
        from tiny_roberta import training_texts  # real essays of the shared data
    except ImportError:  # tests/ imported as a package
        from tests.tiny_roberta import training_texts
    texts = training_texts(200)
    patched = counter.get_cmudict
    try:
        with_compact = [textstat.syllable_count(t) for t in texts]
        counter.get_cmudict = lambda lang: full
        counter.count_syllables.cache_clear()
        with_nltk = [textstat.syllable_count(t) for t in texts]
    finally:
        counter.get_cmudict = patched
        counter.count_syllables.cache_clear()
    assert with_compact == with_nltk and sum(with_compact) > 10_000


def test_feature_cache_is_keyed_by_the_feature_code(tmp_path, monkeypatch):
    """Editing how a feature is computed, or upgrading a library it calls, must not reuse cached values."""
    from importlib import metadata

    import pandas as pd

    from essayscore.features import registry
    from training import matrices

    essays = pd.DataFrame({"essay_id": ["a", "b"]})
    key = matrices._feature_cache_path(tmp_path, essays, "harper")
    assert matrices._feature_cache_path(tmp_path, essays, "harper") == key  # stable for the same code
    sources = registry.feature_sources()
    assert any(p.name == "lexical.py" for p in sources) and any(p.name == "text.py" for p in sources)
    fingerprint = registry.feature_code_fingerprint()
    # one edited line in one feature module: another fingerprint
    edited = [tmp_path / "lexical.py" if p.name == "lexical.py" else p for p in sources]
    (tmp_path / "lexical.py").write_bytes(next(p for p in sources if p.name == "lexical.py").read_bytes() + b"#\n")
    assert registry.feature_code_fingerprint(edited) != fingerprint
    assert registry.feature_code_fingerprint(sources) == fingerprint
    # a new spaCy version: another fingerprint, and another cache file
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "99.0" if name == "spacy" else real_version(name))
    assert registry.feature_code_fingerprint() != fingerprint
    assert matrices._feature_cache_path(tmp_path, essays, "harper") != key
