"""Train the token-level error detector on the W&I gold corrections.

Labels come from the character-level edits: each token gets the class of the edit that touches it (see
:mod:`essayscore.error_detector`). The model is one-vs-rest logistic regression (SGD) over hashed features;
``fit`` trains it, ``token_scores`` measures it (precision, recall and F0.5 of "this token needs a correction",
the usual figure for grammatical error detection), and ``out_of_fold_features`` gives every W&I text learned
error features from a detector that never saw its writer, so the scoring model is not trained on features that
know the gold answer.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

from essayscore.error_detector import (
    CLASSES,
    HASH_BITS,
    ErrorDetector,
    Token,
    density_from_probabilities,
    token_feature_indices,
    tokenize,
)


@dataclass
class DetectorConfig:
    alpha: float = 1e-5  # L2 strength of SGD (weaker: over-confident probabilities, no better F0.5)
    epochs: int = 8
    seed: int = 0
    bits: int = HASH_BITS


def _is_punct(text: str) -> bool:
    stripped = "".join(text.split())
    return bool(stripped) and not any(c.isalnum() for c in stripped)


@lru_cache(maxsize=1)
def _spell_checker():
    from spellchecker import SpellChecker

    return SpellChecker()


def edit_class(original: str, replacement: str | None) -> str:
    if replacement is None:
        return "grammar"  # annotator marked it unclear: some correction is needed
    if (not original.strip() or _is_punct(original)) and (not replacement.strip() or _is_punct(replacement)):
        return "punctuation"
    if not replacement.strip():
        return "unnecessary"
    o, r = original.strip(), replacement.strip()
    lo, lr = o.lower(), r.lower()
    if " " not in o and " " not in r and lo != lr and o.isalpha():
        similar = difflib.SequenceMatcher(None, lo, lr).ratio() >= 0.6
        inflection = lo.startswith(lr) or lr.startswith(lo)  # informations -> information: a word-form error
        if similar and not inflection and lo in _spell_checker().unknown([lo]):
            return "spelling"
    if o.lower() == r.lower():
        return "punctuation"  # casing only: counted with the mechanics
    return "grammar"


def token_labels(text: str, edits: list) -> tuple[list[Token], np.ndarray]:
    tokens = tokenize(text)
    labels = np.zeros(len(tokens), dtype=np.int64)
    starts = np.array([t.start for t in tokens], dtype=np.int64)
    ends = np.array([t.end for t in tokens], dtype=np.int64)
    for edit in edits:
        start, end, replacement = int(edit[0]), int(edit[1]), edit[2]
        original = text[start:end]
        cls = CLASSES.index(edit_class(original, replacement))
        if end <= start or not original.strip():  # an insertion: the token that follows gets "missing"
            if cls == CLASSES.index("punctuation"):
                hit = np.flatnonzero(ends <= start)[-1:]  # punctuation to add after the previous token
            else:
                cls = CLASSES.index("missing")
                hit = np.flatnonzero(starts >= start)[:1]
                if not hit.size:
                    hit = np.array([len(tokens) - 1]) if tokens else hit
        else:
            hit = np.flatnonzero((starts < end) & (ends > start))
        for i in hit:
            if labels[i] == 0:
                labels[i] = cls
    return tokens, labels


def _design(indices: list[np.ndarray], bits: int) -> sparse.csr_matrix:
    lengths = [len(i) for i in indices]
    rows = np.repeat(np.arange(len(indices)), lengths)
    cols = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    return sparse.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(indices), 1 << bits))


@dataclass
class TaggedTexts:
    """Every text's tokens, hashed features and gold labels (computed once, reused by every fold)."""

    ids: list[str]
    tokens: list[list[Token]]
    indices: list[list[np.ndarray]]
    labels: list[np.ndarray]

    @classmethod
    def build(cls, texts: dict[str, tuple[str, list]], bits: int = HASH_BITS) -> TaggedTexts:
        ids, toks, idx, labs = [], [], [], []
        for eid, (text, edits) in texts.items():
            tokens, labels = token_labels(text, edits)
            ids.append(eid)
            toks.append(tokens)
            idx.append(token_feature_indices(tokens, bits))
            labs.append(labels)
        return cls(ids, toks, idx, labs)

    def subset(self, rows: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        indices = [i for r in rows for i in self.indices[r]]
        labels = np.concatenate([self.labels[r] for r in rows]) if len(rows) else np.zeros(0, dtype=np.int64)
        return indices, labels


def fit(tagged: TaggedTexts, rows: np.ndarray, cfg: DetectorConfig = DetectorConfig()) -> ErrorDetector:
    from sklearn.linear_model import SGDClassifier

    indices, labels = tagged.subset(np.asarray(rows))
    x = _design(indices, cfg.bits)
    weights = np.zeros((1 << cfg.bits, len(CLASSES)), dtype=np.float32)
    bias = np.zeros(len(CLASSES), dtype=np.float32)
    for k in range(len(CLASSES)):  # one-vs-rest, each class its own binary logistic model
        y = (labels == k).astype(np.int64)
        if y.min() == y.max():
            bias[k] = 10.0 if y[0] else -10.0
            continue
        model = SGDClassifier(loss="log_loss", alpha=cfg.alpha, max_iter=cfg.epochs, tol=None,
                              random_state=cfg.seed, average=True)
        model.fit(x, y)
        weights[:, k] = model.coef_[0]
        bias[k] = model.intercept_[0]
    return ErrorDetector(weights, bias, cfg.bits)


def token_scores(detector: ErrorDetector, tagged: TaggedTexts, rows: np.ndarray) -> dict[str, float]:
    """Token-level detection of "needs a correction" on ``rows`` (threshold 0.5), plus per-class recall."""
    indices, labels = tagged.subset(np.asarray(rows))
    p = detector.probabilities_for(indices)
    predicted, truth = p[:, 0] < 0.5, labels > 0
    tp = float(np.sum(predicted & truth))
    precision = tp / max(1.0, float(predicted.sum()))
    recall = tp / max(1.0, float(truth.sum()))
    f05 = (1.25 * precision * recall / (0.25 * precision + recall)) if precision + recall else 0.0
    out = {"tokens": int(len(labels)), "error_token_share": float(truth.mean()), "precision": precision,
           "recall": recall, "f0_5": f05}
    for k, name in enumerate(CLASSES[1:], start=1):
        gold = labels == k
        out[f"recall_{name}"] = float(np.mean(predicted[gold])) if gold.any() else float("nan")
    # how well the expected error count tracks the gold count per text (what the features use)
    expected, gold_counts = [], []
    for r in rows:
        pr = detector.probabilities_for(tagged.indices[r])
        expected.append(float((1 - pr[:, 0]).sum()) if len(pr) else 0.0)
        gold_counts.append(float((tagged.labels[r] > 0).sum()))
    out["text_count_pearson"] = float(np.corrcoef(expected, gold_counts)[0, 1]) if len(rows) > 2 else float("nan")
    return out


def features_for(detector: ErrorDetector, tagged: TaggedTexts, rows: np.ndarray) -> np.ndarray:
    return np.array([density_from_probabilities(tagged.tokens[r], detector.probabilities_for(tagged.indices[r]))
                     for r in rows], dtype=np.float32)


def writer_folds(writers: list[str], k: int = 5, seed: int = 0) -> np.ndarray:
    """A fold number per text, grouped by writer."""
    unique = sorted(set(writers))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: int(f) % k for f, i in enumerate(order)}
    return np.array([fold_of[w] for w in writers], dtype=np.int64)


@dataclass
class DetectorStage:
    """The shipped detector, every text's learned features and the detector's held-out figures."""

    detector: ErrorDetector
    features: np.ndarray  # (n_texts, len(LEARNED_FEATURES)), in the data's row order
    metrics: dict


def detector_stage(essays, wi_texts: dict[str, tuple[str, list]], cfg: DetectorConfig = DetectorConfig(),
                   k: int = 5) -> DetectorStage:
    """Train on every W&I text with gold edits (the shipped detector). Texts it saw get out-of-fold features
    from a detector trained without their writer; every other text (IELTS) gets the shipped detector's."""
    from essayscore.text import normalize

    wanted = [eid for eid in essays["essay_id"] if eid in wi_texts]
    tagged = TaggedTexts.build({eid: wi_texts[eid] for eid in wanted}, cfg.bits)
    writers = essays.set_index("essay_id").loc[tagged.ids, "writer"].astype(str).tolist()
    folds = writer_folds(writers, k, cfg.seed)
    oof = np.zeros((len(tagged.ids), 7), dtype=np.float32)
    fold_scores = []
    for f in range(k):
        held = np.flatnonzero(folds == f)
        model = fit(tagged, np.flatnonzero(folds != f), cfg)
        fold_scores.append(token_scores(model, tagged, held))
        # features from the normalised text, exactly as serving computes them
        oof[held] = np.array([model.density_features(normalize(wi_texts[tagged.ids[r]][0]).replace("\n", " "))
                              for r in held], dtype=np.float32)
    shipped = fit(tagged, np.arange(len(tagged.ids)), cfg)
    position = {eid: i for i, eid in enumerate(tagged.ids)}
    out = np.zeros((len(essays), 7), dtype=np.float32)
    for row, (eid, text) in enumerate(zip(essays["essay_id"], essays["essay"])):
        out[row] = oof[position[eid]] if eid in position else \
            shipped.density_features(normalize(text).replace("\n", " "))
    metrics = {"trained_on_texts": len(tagged.ids), "trained_on_tokens": int(sum(len(x) for x in tagged.labels)),
               "config": asdict(cfg),
               "writer_grouped_cv": {key: float(np.nanmean([s[key] for s in fold_scores])) for key in fold_scores[0]}}
    shipped.metrics = metrics
    return DetectorStage(shipped, out, metrics)
