"""Feature extraction: one shared analysis of the essay (normalised text, spaCy parse, grammar matches) that
every group module reads, assembled into the registry's vector order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np

from essayscore.features.grammar import GrammarChecker, GrammarMatch, _to_original, get_checker
from essayscore.features.nlp import PARSE_LOCK, get_nlp
from essayscore.features.registry import EMBEDDING_FEATURES, FEATURE_INDEX, FEATURES, GROUP_MODULES, LEARNED_FEATURES
from essayscore.text import normalize_with_map, to_normalized_offset, words

if TYPE_CHECKING:
    from spacy.tokens import Doc

CONTENT_POS = frozenset({"NOUN", "VERB", "ADJ", "ADV", "PROPN"})

# Words of the task instructions rather than its topic ("To what extent do you agree or disagree?").
PROMPT_INSTRUCTION_WORDS = frozenset(
    """agree disagree extent discuss discussion view opinion give reason answer include relevant example
    knowledge experience write word least question task essay think believe say argue feel claim people
    some other many own both side statement point""".split()
)


@dataclass
class PromptInfo:
    keywords: frozenset[str]  # content lemmas of the prompt, instruction words removed
    lemma_counts: dict[str, int]
    trigrams: frozenset[tuple[str, str, str]]  # lower-case word trigrams of the prompt


@dataclass
class Analysis:
    """Everything the feature groups read, computed once per essay. Offsets are into ``flat``."""

    flat: str  # normalised text on one line
    doc: Doc  # spaCy Doc of ``flat``
    matches: list[GrammarMatch]  # grammar matches, offsets into ``flat``
    prompt: PromptInfo | None = None
    extras: dict = field(default_factory=dict)

    @cached_property
    def words(self) -> list[str]:
        return words(self.flat)

    @cached_property
    def lower_words(self) -> list[str]:
        return [w.lower() for w in self.words]

    @cached_property
    def n_words(self) -> int:
        return len(self.words)

    @cached_property
    def sents(self) -> list:
        return [s for s in self.doc.sents if any(not t.is_punct and not t.is_space for t in s)]

    @cached_property
    def sent_word_counts(self) -> list[int]:
        return [len(words(s.text)) for s in self.sents]

    @cached_property
    def tokens(self) -> list:
        """Tokens that are words or numbers (no punctuation, no whitespace)."""
        return [t for t in self.doc if not t.is_punct and not t.is_space]

    @cached_property
    def content_tokens(self) -> list:
        return [t for t in self.doc if t.is_alpha and t.pos_ in CONTENT_POS and not t.is_stop]

    @cached_property
    def content_lemmas(self) -> list[str]:
        return [t.lemma_.lower() for t in self.content_tokens]

    @cached_property
    def sent_content_lemmas(self) -> list[list[str]]:
        return [
            [t.lemma_.lower() for t in s if t.is_alpha and t.pos_ in CONTENT_POS and not t.is_stop]
            for s in self.sents
        ]


def per100(count: float, n_words: int) -> float:
    return 100.0 * count / n_words if n_words else 0.0


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


@lru_cache(maxsize=4096)
def prompt_info(prompt: str) -> PromptInfo:
    from essayscore.text import flatten

    flat = flatten(prompt)
    nlp = get_nlp()
    with PARSE_LOCK:  # lemmas need the tagger, not the parser: skipping it halves the prompt's cost
        doc = nlp(flat, disable=[p for p in ("parser",) if p in nlp.pipe_names])
    counts: dict[str, int] = {}
    for t in doc:
        if t.is_alpha and t.pos_ in CONTENT_POS and not t.is_stop:
            lemma = t.lemma_.lower()
            if lemma not in PROMPT_INSTRUCTION_WORDS:
                counts[lemma] = counts.get(lemma, 0) + 1
    low = [w.lower() for w in words(flat)]
    trigrams = frozenset(zip(low, low[1:], low[2:]))
    return PromptInfo(frozenset(counts), counts, trigrams)


@dataclass
class FeatureResult:
    values: np.ndarray  # float32, shape (len(FEATURES),); NaN where undefined
    matches: list[GrammarMatch]  # the grammar checker's matches, offsets into the text the caller passed


_NON_SPACE = re.compile(r"\S")


class FeatureExtractor:
    """``error_detector``: the artifact's learned detector (:class:`essayscore.error_detector.ErrorDetector`);
    without one the ``learned_errors`` columns are NaN."""

    def __init__(self, checker: GrammarChecker | None = None, error_detector=None) -> None:
        if checker is None:
            from essayscore.settings import get_settings

            checker = get_checker(get_settings())
        self.checker = checker
        self.error_detector = error_detector
        self.nlp = get_nlp()

    # ------------------------------------------------------------------------------------------------------------
    def _analysis(self, essay: str, prompt: str | None, doc=None) -> tuple[Analysis, list[GrammarMatch]]:
        norm, mapping = normalize_with_map(essay)
        flat = norm.replace("\n", " ")  # same length as norm, so the map serves both
        if doc is None:
            doc = self._parse(flat)
        if not _NON_SPACE.search(flat):
            local: list[GrammarMatch] = []
            matches: list[GrammarMatch] = []
        elif hasattr(self.checker, "check_normalized"):
            # our checkers: check the flat text we already have, then map the matches back for the user
            local = self.checker.check_normalized(flat)
            matches = _to_original(essay, mapping, local)
        else:
            # any other GrammarChecker: matches come in original offsets; bring them into normalised ones
            matches = self.checker.check(essay)
            local = []
            for m in matches:
                start = to_normalized_offset(mapping, m.offset)
                end = max(start, to_normalized_offset(mapping, m.offset + m.length))
                local.append(GrammarMatch(start, end - start, m.category, m.rule_id, m.message, m.suggestions))
        info = prompt_info(prompt) if prompt is not None and prompt.strip() else None
        analysis = Analysis(flat=flat, doc=doc, matches=local, prompt=info,
                            extras={"error_detector": self.error_detector})
        return analysis, matches

    @staticmethod
    def _vector(analysis: Analysis) -> np.ndarray:
        values = np.full(len(FEATURES), np.nan, dtype=np.float64)
        for module in GROUP_MODULES:
            for name, value in module.compute(analysis).items():
                values[FEATURE_INDEX[name]] = value
        # documented NaNs: embedding features (filled later) and prompt features without a prompt
        bad = ~np.isfinite(values)
        for name in EMBEDDING_FEATURES:
            bad[FEATURE_INDEX[name]] = False
        if analysis.extras.get("error_detector") is None:
            for name in LEARNED_FEATURES:
                bad[FEATURE_INDEX[name]] = False
        if analysis.prompt is None:
            for module in GROUP_MODULES:
                if module.GROUP == "prompt_alignment":
                    for entry in module.SPECS:
                        bad[FEATURE_INDEX[entry[0]]] = False
        values[bad] = 0.0  # defensive: a degenerate input never leaks NaN/inf into undocumented places
        return values.astype(np.float32)

    def _parse(self, flat: str):
        with PARSE_LOCK:
            return self.nlp(flat)

    # ------------------------------------------------------------------------------------------------------------
    def extract(self, essay: str, prompt: str | None = None) -> FeatureResult:
        analysis, matches = self._analysis(essay, prompt)
        return FeatureResult(values=self._vector(analysis), matches=matches)

    def extract_many(
        self, essays: Sequence[str], prompts: Sequence[str | None], progress: bool = False
    ) -> tuple[np.ndarray, list[list[GrammarMatch]]]:
        """Features of many essays: (n, F) float32 and each essay's matches. spaCy parses in batches."""
        if len(prompts) != len(essays):
            raise ValueError(f"{len(essays)} essays but {len(prompts)} prompts")
        from essayscore.text import flatten

        out = np.empty((len(essays), len(FEATURES)), dtype=np.float32)
        all_matches: list[list[GrammarMatch]] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(essays), desc="features", unit="essay")
        chunk = 64
        for lo in range(0, len(essays), chunk):
            batch = list(essays[lo : lo + chunk])
            with PARSE_LOCK:
                docs = list(self.nlp.pipe([flatten(e) for e in batch], batch_size=32))
            for j, (essay, doc) in enumerate(zip(batch, docs)):
                analysis, matches = self._analysis(essay, prompts[lo + j], doc)
                out[lo + j] = self._vector(analysis)
                all_matches.append(matches)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return out, all_matches


def with_error_detector(detector, extractor: FeatureExtractor | None = None) -> FeatureExtractor:
    """``extractor`` (a new one when None) set to use ``detector``, an artifact's learned error detector, or none.

    A caller's extractor gets it too: with another detector (or none) the ``learned_errors`` columns are not the
    ones the model was trained on, and the scores are not the model's."""
    extractor = extractor or FeatureExtractor()
    extractor.error_detector = detector
    return extractor


def add_embedding_features(
    values: np.ndarray, essay_emb: np.ndarray, prompt_emb: np.ndarray | None
) -> np.ndarray:
    """Fill the ``needs_embeddings`` columns of a (F,) or (n, F) feature array and return it.

    ``prompt_essay_cosine`` = cosine similarity of the essay and prompt embeddings; NaN where there is no prompt
    (``prompt_emb`` None, or a row of it that is all NaN).
    """
    values = np.asarray(values, dtype=np.float32)
    single = values.ndim == 1
    v = values[None, :] if single else values
    e = np.asarray(essay_emb, dtype=np.float64)
    e = e[None, :] if e.ndim == 1 else e
    if e.shape[0] != v.shape[0]:
        raise ValueError(f"{v.shape[0]} feature rows but {e.shape[0]} essay embeddings")
    col = FEATURE_INDEX["prompt_essay_cosine"]
    if prompt_emb is None:
        v[:, col] = np.nan
    else:
        p = np.asarray(prompt_emb, dtype=np.float64)
        p = p[None, :] if p.ndim == 1 else p
        if p.shape[0] == 1 and e.shape[0] > 1:
            p = np.repeat(p, e.shape[0], axis=0)
        if p.shape != e.shape:
            raise ValueError(f"prompt embeddings {p.shape} do not match essay embeddings {e.shape}")
        ne = np.linalg.norm(e, axis=1)
        npr = np.linalg.norm(p, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.einsum("ij,ij->i", e, p) / (ne * npr)
        cos[~np.isfinite(cos)] = np.nan  # missing prompt rows (NaN) or zero vectors
        v[:, col] = cos.astype(np.float32)
    return v[0] if single else v


__all__ = [
    "Analysis",
    "FeatureExtractor",
    "FeatureResult",
    "PromptInfo",
    "add_embedding_features",
    "per100",
    "ratio",
]
