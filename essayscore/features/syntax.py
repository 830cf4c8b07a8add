"""Syntactic complexity from the spaCy dependency parse: depth, clauses, subordination, passives, noun-phrase
complexity and part-of-speech proportions."""

from __future__ import annotations

import numpy as np

GROUP = "syntactic_complexity"

SPECS = (
    ("mean_parse_depth", "Average depth of the sentences' grammatical trees (deeper = more embedded structure)."),
    ("mean_dependency_distance", "Average distance in words between a word and the word it depends on."),
    ("clauses_per_sentence", "Average number of clauses per sentence."),
    ("subordinate_clauses_per_sentence",
     "Average number of subordinate clauses (because..., which..., that...) per sentence."),
    ("relative_clauses_per_sentence", "Average number of relative clauses (who/which/that...) per sentence."),
    ("complex_sentence_share", "Share of sentences containing at least one subordinate clause."),
    ("passive_sentence_share", "Share of sentences using the passive voice."),
    ("coordination_per_sentence", "Coordinating conjunctions (and, but, or) per sentence."),
    ("mean_noun_phrase_length", "Average length of noun phrases in words."),
    ("noun_modifiers_per_noun",
     "Average number of modifiers (adjectives, prepositional phrases, clauses) attached to a noun."),
    ("noun_ratio", "Share of words that are nouns."),
    ("verb_ratio", "Share of words that are verbs."),
    ("adjective_ratio", "Share of words that are adjectives."),
    ("adverb_ratio", "Share of words that are adverbs."),
    ("preposition_ratio", "Share of words that are prepositions."),
    ("modal_rate", "Modal verbs (can, should, might...) per 100 words."),
    ("verb_form_variety",
     "Number of different verb forms used (base, past, -ing, past participle, present, modal; 0-7)."),
)

SUBORDINATE_DEPS = ("advcl", "ccomp", "csubj", "csubjpass", "acl", "relcl")
CLAUSE_DEPS = SUBORDINATE_DEPS + ("xcomp",)
PASSIVE_DEPS = ("nsubjpass", "auxpass", "csubjpass")
NOUN_MOD_DEPS = ("amod", "compound", "prep", "acl", "relcl", "nummod", "poss", "nmod", "appos")
VERB_TAGS = ("VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "MD")


def _ids(strings, labels) -> np.ndarray:
    return np.array([strings[x] for x in labels], dtype=np.uint64)


def _max_depth(heads: np.ndarray, start: int, end: int) -> int:
    """Height of the dependency tree over tokens [start, end) (root = 1); iterative, run-ons nest deep."""
    depth = [0] * (end - start)
    best = 0
    for i in range(start, end):
        path = []
        cur = i
        while depth[cur - start] == 0:
            h = int(heads[cur])
            if h == cur or not (start <= h < end):
                depth[cur - start] = 1
                break
            path.append(cur)
            cur = h
        d = depth[cur - start]
        for j in reversed(path):
            d += 1
            depth[j - start] = d
        best = max(best, depth[i - start])
    return best


def compute(a) -> dict[str, float]:
    from spacy import symbols as sym
    from spacy.attrs import DEP, HEAD, IS_PUNCT, IS_SPACE, POS, TAG

    sents = a.sents
    n_sent = len(sents)
    doc = a.doc
    if not n_sent or not len(doc):
        return {name: 0.0 for name, _ in SPECS}
    # one numpy pass instead of creating a Python Token object per access (5x faster)
    arr = doc.to_array([HEAD, DEP, POS, TAG, IS_PUNCT, IS_SPACE])
    idx = np.arange(len(doc))
    heads = idx + arr[:, 0].astype(np.int64)
    dep, pos, tag = arr[:, 1], arr[:, 2], arr[:, 3]
    word = (arr[:, 4] == 0) & (arr[:, 5] == 0)
    n_tok = int(word.sum())
    if not n_tok:
        return {name: 0.0 for name, _ in SPECS}
    strings = doc.vocab.strings
    verbal = np.isin(pos, np.array([sym.VERB, sym.AUX], dtype=np.uint64))
    nounish = np.isin(pos, np.array([sym.NOUN, sym.PROPN], dtype=np.uint64))
    is_sub = np.isin(dep, _ids(strings, SUBORDINATE_DEPS))
    is_clause = (
        np.isin(dep, _ids(strings, CLAUSE_DEPS))
        | ((dep == strings["ROOT"]) & verbal)
        | ((dep == strings["conj"]) & verbal & verbal[heads])
    )
    is_rel = dep == strings["relcl"]
    is_pass = np.isin(dep, _ids(strings, PASSIVE_DEPS))
    is_cc = dep == strings["cc"]

    depths, subs_per, pass_per = [], [], []
    clauses = rels = cc = 0
    for s in sents:
        lo, hi = s.start, s.end
        depths.append(_max_depth(heads, lo, hi))
        subs_per.append(int(is_sub[lo:hi].sum()))
        pass_per.append(bool(is_pass[lo:hi].any()))
        clauses += int(is_clause[lo:hi].sum())
        rels += int(is_rel[lo:hi].sum())
        cc += int(is_cc[lo:hi].sum())
    attached = word & (heads != idx)
    dists = np.abs(heads - idx)[attached]
    chunks = list(doc.noun_chunks)
    nouns = word & nounish
    noun_mods = int((word & np.isin(dep, _ids(strings, NOUN_MOD_DEPS)) & nouns[heads] & (heads != idx)).sum())
    wpos = pos[word]
    wtag = tag[word]

    def share(*symbols) -> float:
        return float(np.isin(wpos, np.array(symbols, dtype=np.uint64)).sum()) / n_tok

    modals = int((wtag == strings["MD"]).sum())
    verb_tags = _ids(strings, VERB_TAGS)
    n_words = a.n_words or n_tok
    return {
        "mean_parse_depth": sum(depths) / n_sent,
        "mean_dependency_distance": float(dists.mean()) if len(dists) else 0.0,
        "clauses_per_sentence": clauses / n_sent,
        "subordinate_clauses_per_sentence": sum(subs_per) / n_sent,
        "relative_clauses_per_sentence": rels / n_sent,
        "complex_sentence_share": sum(1 for k in subs_per if k) / n_sent,
        "passive_sentence_share": sum(pass_per) / n_sent,
        "coordination_per_sentence": cc / n_sent,
        "mean_noun_phrase_length": (
            sum(sum(1 for t in c if not t.is_punct) for c in chunks) / len(chunks) if chunks else 0.0
        ),
        "noun_modifiers_per_noun": noun_mods / int(nouns.sum()) if nouns.any() else 0.0,
        "noun_ratio": share(sym.NOUN, sym.PROPN),
        "verb_ratio": share(sym.VERB),
        "adjective_ratio": share(sym.ADJ),
        "adverb_ratio": share(sym.ADV),
        "preposition_ratio": share(sym.ADP),
        "modal_rate": 100.0 * modals / n_words,
        "verb_form_variety": float(len(set(wtag[np.isin(wtag, verb_tags)].tolist()))),
    }
