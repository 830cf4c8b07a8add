"""Lexical diversity: how varied the vocabulary is, with length-corrected measures (root/log TTR, Maas, MTLD,
HD-D, MATTR) because the plain type-token ratio falls as texts get longer.

The measures are written out here (a few lines each, following McCarthy & Jarvis 2007/2010 and Covington &
McFall 2010) rather than taken from ``lexicalrichness``: that package imports matplotlib and pandas at import,
computes HD-D with one scipy call per word type (~10 ms an essay) and raises on texts shorter than its windows.
"""

from __future__ import annotations

import math
from collections import Counter

GROUP = "lexical_diversity"

SPECS = (
    ("unique_word_count", "Number of different words used."),
    ("ttr", "Type-token ratio: distinct words divided by total words (falls naturally with length)."),
    ("root_ttr", "Guiraud's root TTR: distinct words / square root of total words (higher = more varied vocabulary)."),
    ("log_ttr", "Herdan's log TTR: log(distinct words) / log(total words)."),
    ("maas", "Maas index of lexical diversity (lower = more varied vocabulary)."),
    ("mtld", "MTLD: average run of words before vocabulary starts repeating (higher = more varied)."),
    ("hdd", "HD-D: expected share of distinct words in a random 42-word sample (higher = more varied)."),
    ("mattr", "Moving-average TTR over 50-word windows (higher = more varied)."),
    ("hapax_share", "Share of distinct words that are used only once."),
    ("content_lemma_root_ttr",
     "Distinct content-word lemmas / square root of content words (variety of meaning words)."),
)

MTLD_THRESHOLD = 0.72
HDD_DRAWS = 42
MATTR_WINDOW = 50


def _mtld_pass(tokens: list[str]) -> float:
    factors = 0.0
    types: set[str] = set()
    count = 0
    for tok in tokens:
        count += 1
        types.add(tok)
        if len(types) / count <= MTLD_THRESHOLD:
            factors += 1
            types = set()
            count = 0
    if count:
        factors += (1 - len(types) / count) / (1 - MTLD_THRESHOLD)
    return len(tokens) / factors if factors > 0 else float(len(tokens))


def mtld(tokens: list[str]) -> float:
    if not tokens:
        return 0.0
    return (_mtld_pass(tokens) + _mtld_pass(tokens[::-1])) / 2


def hdd(tokens: list[str], draws: int = HDD_DRAWS) -> float:
    """Sum over types of P(type appears in a random sample of ``draws`` tokens) / draws (hypergeometric)."""
    n = len(tokens)
    if not n:
        return 0.0
    draws = min(draws, n)
    lg = math.lgamma
    base = lg(n + 1) - lg(n - draws + 1)
    total = 0.0
    for freq in Counter(tokens).values():
        rest = n - freq
        # P(X = 0) = C(n - f, d) / C(n, d)
        p0 = math.exp(lg(rest + 1) - lg(rest - draws + 1) - base) if rest >= draws else 0.0
        total += 1.0 - p0
    return total / draws


def mattr(tokens: list[str], window: int = MATTR_WINDOW) -> float:
    n = len(tokens)
    if not n:
        return 0.0
    if n <= window:
        return len(set(tokens)) / n
    counts = Counter(tokens[:window])
    distinct = len(counts)
    total = distinct
    for i in range(window, n):
        out, inc = tokens[i - window], tokens[i]
        counts[out] -= 1
        if counts[out] == 0:
            distinct -= 1
        if counts[inc] == 0:
            distinct += 1
        counts[inc] += 1
        total += distinct
    return total / ((n - window + 1) * window)


def compute(a) -> dict[str, float]:
    toks = a.lower_words
    n = len(toks)
    counts = Counter(toks)
    v = len(counts)
    log_n = math.log(n) if n > 1 else 0.0
    content = a.content_lemmas
    return {
        "unique_word_count": float(v),
        "ttr": v / n if n else 0.0,
        "root_ttr": v / math.sqrt(n) if n else 0.0,
        "log_ttr": math.log(v) / log_n if log_n else 1.0 if n else 0.0,
        "maas": (log_n - math.log(v)) / (log_n**2) if log_n else 0.0,
        "mtld": mtld(toks),
        "hdd": hdd(toks),
        "mattr": mattr(toks),
        "hapax_share": sum(1 for c in counts.values() if c == 1) / v if v else 0.0,
        "content_lemma_root_ttr": len(set(content)) / math.sqrt(len(content)) if content else 0.0,
    }
