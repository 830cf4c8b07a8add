"""Cohesion: connectives by function, how sentences link to their neighbours and to the whole essay, reference
(pronouns, demonstratives) and repetition.

Ambiguous words that are usually not connectives in learner writing ('so' as intensifier, 'like', 'still') are
left out of the lists; 'while', 'since' and 'then' stay in (mostly connective in argumentative essays).
"""

from __future__ import annotations

import math
import re
from collections import Counter

from essayscore.features.nlp import zipf

GROUP = "cohesion"

CONNECTIVES: dict[str, tuple[str, ...]] = {
    "additive": (
        "moreover", "furthermore", "in addition", "additionally", "also", "besides", "what is more",
        "as well as", "likewise", "similarly", "not only", "in the same way", "apart from this",
    ),
    "contrast": (
        "however", "nevertheless", "nonetheless", "on the other hand", "in contrast", "by contrast", "whereas",
        "while", "whilst", "although", "though", "even though", "despite", "in spite of", "but", "yet",
        "conversely", "on the contrary", "instead", "otherwise", "admittedly", "even so",
    ),
    "causal": (
        "because", "because of", "therefore", "thus", "hence", "consequently", "as a result", "as a consequence",
        "due to", "owing to", "so that", "for this reason", "accordingly", "thereby", "since",
        "this means that", "that is why", "in order to",
    ),
    "sequential": (
        "firstly", "first of all", "secondly", "thirdly", "finally", "lastly", "next", "then", "subsequently",
        "to begin with", "in the first place", "afterwards", "meanwhile", "to start with", "last but not least",
    ),
    "exemplification": (
        "for example", "for instance", "such as", "namely", "in particular", "particularly", "to illustrate",
        "specifically", "including", "a case in point", "as an illustration", "e.g",
    ),
    "conclusion": (
        "in conclusion", "to conclude", "to sum up", "in summary", "to summarise", "to summarize", "overall",
        "all in all", "in short", "in brief", "on the whole", "ultimately", "in a nutshell", "all things considered",
    ),
}

_TYPE_TEXT = {
    "additive": "Adding connectives (moreover, furthermore, in addition)",
    "contrast": "Contrast connectives (however, although, on the other hand)",
    "causal": "Cause-and-effect connectives (because, therefore, as a result)",
    "sequential": "Sequencing connectives (firstly, secondly, finally)",
    "exemplification": "Example connectives (for example, for instance, such as)",
    "conclusion": "Concluding connectives (in conclusion, to sum up, overall)",
}

SPECS = (("connectives_per_100w", "Linking words and phrases of any kind per 100 words."),) + tuple(
    (f"connectives_{k}_per_100w", f"{v} per 100 words.") for k, v in _TYPE_TEXT.items()
) + (
    ("connective_variety", "Number of different linking words and phrases used."),
    ("sentence_initial_connective_share", "Share of sentences that open with a linking word (e.g. 'However,')."),
    ("adjacent_sentence_overlap", "How many content words neighbouring sentences share (Jaccard overlap of lemmas)."),
    ("adjacent_sentence_similarity",
     "Similarity of neighbouring sentences' vocabulary (cosine, rarer words weigh more)."),
    ("sentence_essay_similarity", "How closely each sentence keeps to the essay's overall vocabulary (topic focus)."),
    ("pronoun_ratio", "Pronouns as a share of nouns and pronouns (reference by pronoun)."),
    ("first_person_rate", "First-person pronouns (I, me, my, we, our...) per 100 words."),
    ("demonstrative_rate", "Demonstratives referring back (this, these, those, that + noun) per 100 words."),
    ("top_content_word_share", "Share of content words taken by the single most repeated one."),
    ("local_repetition_share", "Share of content words that repeat one used in the previous 20 content words."),
    ("sentence_opening_variety", "Share of sentences that begin with a different first word."),
)

_PHRASE_TYPE: dict[str, str] = {}
for _kind, _phrases in CONNECTIVES.items():
    for _p in _phrases:
        _PHRASE_TYPE.setdefault(_p, _kind)
# longest first so "even though" wins over "though", "because of" over "because"
_CONNECTIVE_RE = re.compile(
    r"\b(" + "|".join(re.escape(p) for p in sorted(_PHRASE_TYPE, key=len, reverse=True)) + r")\b"
)
FIRST_PERSON = frozenset("i me my mine myself we us our ours ourselves".split())
LOCAL_WINDOW = 20


def _weight(lemma: str) -> float:
    """Information weight of a lemma: rarer words count more (a global IDF stand-in from wordfreq)."""
    return max(0.5, 8.0 - zipf(lemma))


def _vec(lemmas: list[str]) -> dict[str, float]:
    return {k: c * _weight(k) for k, c in Counter(lemmas).items()}


def _cos(a: dict[str, float], b: dict[str, float]) -> float:
    if not a or not b:
        return 0.0
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


def compute(a) -> dict[str, float]:
    n = a.n_words
    text = a.flat
    # lower-case first (no IGNORECASE): a regex match on mixed case could lower() to a key that is not listed
    found = [m.group(1) for m in _CONNECTIVE_RE.finditer(text.lower())]
    by_type = Counter(_PHRASE_TYPE[p] for p in found)
    out: dict[str, float] = {
        f"connectives_{k}_per_100w": 100.0 * by_type.get(k, 0) / n if n else 0.0 for k in CONNECTIVES
    }
    out["connectives_per_100w"] = 100.0 * len(found) / n if n else 0.0
    out["connective_variety"] = float(len(set(found)))
    sents = a.sents
    n_sent = len(sents)
    initial = 0
    openers = []
    for s in sents:
        st = s.text.lstrip(" \"'(").lower()
        m = _CONNECTIVE_RE.match(st)
        if m and m.start() == 0:
            initial += 1
        first = next((t.lower_ for t in s if t.is_alpha), "")
        openers.append(first)
    out["sentence_initial_connective_share"] = initial / n_sent if n_sent else 0.0

    lemma_sents = a.sent_content_lemmas
    jac, cos = [], []
    vecs = [_vec(x) for x in lemma_sents]
    for i in range(len(lemma_sents) - 1):
        sa, sb = set(lemma_sents[i]), set(lemma_sents[i + 1])
        union = sa | sb
        jac.append(len(sa & sb) / len(union) if union else 0.0)
        cos.append(_cos(vecs[i], vecs[i + 1]))
    out["adjacent_sentence_overlap"] = sum(jac) / len(jac) if jac else 0.0
    out["adjacent_sentence_similarity"] = sum(cos) / len(cos) if cos else 0.0
    whole = _vec(a.content_lemmas)
    sims = []
    for v in vecs:
        if v:
            rest = {k: whole[k] - v.get(k, 0.0) for k in whole}  # leave the sentence itself out
            sims.append(_cos(v, rest))
    out["sentence_essay_similarity"] = sum(sims) / len(sims) if sims else 0.0

    toks = a.tokens
    pron = sum(1 for t in toks if t.pos_ == "PRON")
    nouns = sum(1 for t in toks if t.pos_ in ("NOUN", "PROPN"))
    out["pronoun_ratio"] = pron / (pron + nouns) if pron + nouns else 0.0
    out["first_person_rate"] = 100.0 * sum(1 for w in a.lower_words if w in FIRST_PERSON) / n if n else 0.0
    demo = sum(
        1
        for t in toks
        if t.lower_ in ("this", "these", "those") or (t.lower_ == "that" and t.dep_ == "det")
    )
    out["demonstrative_rate"] = 100.0 * demo / n if n else 0.0

    lemmas = a.content_lemmas
    counts = Counter(lemmas)
    out["top_content_word_share"] = max(counts.values()) / len(lemmas) if lemmas else 0.0
    rep = 0
    for i, lemma in enumerate(lemmas):
        if lemma in lemmas[max(0, i - LOCAL_WINDOW) : i]:
            rep += 1
    out["local_repetition_share"] = rep / len(lemmas) if lemmas else 0.0
    out["sentence_opening_variety"] = len(set(openers)) / n_sent if n_sent else 0.0
    return out
