"""Token windows and their pooling: numpy only (no torch, no tokenizer), shared by every encoder backend.

An encoder cuts each text into overlapping windows (:class:`Windows`, built by
:class:`essayscore.encoder.Windower`), embeds every window (torch, ONNX Runtime or a Triton model), and
:func:`pool_windows` averages each text's window vectors weighted by their real token counts.
:func:`length_sorted_batches` groups windows of similar length so that a batch wastes little on padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from essayscore.settings import get_settings


@dataclass
class Windows:
    input_ids: np.ndarray  # int64 (n_windows, L), right-padded with the tokenizer's pad id
    attention_mask: np.ndarray  # int64 (n_windows, L)
    owner: np.ndarray  # int64 (n_windows,) index of the text each window belongs to
    n_tokens: np.ndarray  # int64 (n_windows,) real (unpadded) tokens per window, special tokens included

    def __len__(self) -> int:
        return int(self.owner.shape[0])


def window_starts(n_text_tokens: int, content: int, stride: int) -> list[int]:
    """Start offsets (in text tokens) of the windows covering ``n_text_tokens`` tokens, ``content`` per window."""
    if n_text_tokens <= content:
        return [0]
    count = 1 + math.ceil((n_text_tokens - content) / stride)
    return [i * stride for i in range(count)]


def pool_windows(window_embeddings: np.ndarray, owner: np.ndarray, n_tokens: np.ndarray, n_texts: int) -> np.ndarray:
    """Per text, the ``n_tokens``-weighted mean of its window embeddings -> ``(n_texts, dim)`` float32.

    The single place of this logic for every runtime (torch, ONNX Runtime, Triton). A text without windows
    (or whose windows all have zero weight) raises, rather than silently becoming a zero vector.
    """
    emb = np.asarray(window_embeddings, dtype=np.float64)
    owner = np.asarray(owner, dtype=np.int64)
    weights = np.asarray(n_tokens, dtype=np.float64)
    if emb.ndim != 2 or owner.shape != (emb.shape[0],) or weights.shape != (emb.shape[0],):
        raise ValueError(f"shape mismatch: embeddings {emb.shape}, owner {owner.shape}, n_tokens {weights.shape}")
    if owner.size and (owner.min() < 0 or owner.max() >= n_texts):
        raise ValueError(f"owner indices must lie in [0, {n_texts})")
    sums = np.zeros((n_texts, emb.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, emb * weights[:, None])
    totals = np.bincount(owner, weights=weights, minlength=n_texts)
    if np.any(totals <= 0):
        raise ValueError(f"texts without weighted windows: {np.flatnonzero(totals <= 0).tolist()[:10]}")
    return (sums / totals[:, None]).astype(np.float32)


def length_sorted_batches(windows: Windows, batch_size: int, progress_label: str | None = None,
                          max_padding: float | None = None, per_text: bool = False):
    """Window index batches of similar length (longest first) and each batch's width.

    A batch holds at most ``batch_size`` windows and is closed early when the next window would make its padded
    positions exceed its real tokens by more than ``max_padding`` (a share; default: the setting
    ``encoder_max_padding``). On a CPU a padded position costs as much as a real one while a smaller batch costs
    little: an essay's 146-token last window padded to 256 made the single-essay encoder ~25% slower.
    ``per_text``: never mix texts in a batch (int8 graphs quantise activations with one scale per batch, so
    batch-mates would move a text's embedding; this keeps every essay's score independent of the others).
    """
    if max_padding is None:
        max_padding = get_settings().encoder_max_padding
    lengths, owner = windows.n_tokens, windows.owner
    order = np.lexsort((-lengths, owner)) if per_text else np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start, real = 0, 0
    for pos, index in enumerate(order):
        first = order[start]
        size = pos - start + 1
        if pos > start and (size > batch_size or (per_text and owner[index] != owner[first])
                            or int(lengths[first]) * size > (1.0 + max_padding) * (real + int(lengths[index]))):
            batches.append(order[start:pos])
            start, real = pos, 0
        real += int(lengths[index])
    if len(order):
        batches.append(order[start:])
    if progress_label:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=progress_label, unit="batch")
    for batch in batches:
        yield batch, int(lengths[batch].max())


def windows_from_padded(input_ids: np.ndarray, attention_mask: np.ndarray) -> Windows:
    """Ready-made padded windows (the Triton encoder model's inputs) as :class:`Windows`, so that they are
    re-batched by length like any other."""
    input_ids = np.asarray(input_ids, dtype=np.int64)
    attention_mask = np.asarray(attention_mask, dtype=np.int64)
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must be equal 2-d")
    n = input_ids.shape[0]
    return Windows(input_ids, attention_mask, np.zeros(n, dtype=np.int64), attention_mask.sum(axis=1).astype(np.int64))
