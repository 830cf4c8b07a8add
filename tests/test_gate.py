"""The retraining gate (training/gate.py) and the champion pointer (essayscore/champion.py), on real models.

* The session's model is the champion of a fresh artifacts folder. A challenger trained on the same data with
  the same seed passes and is promoted; one trained on shuffled labels is refused and the champion stays;
  rollback restores the earlier champion.
* A pointer to a missing or altered artifact is refused with a clear error, and so is a changed evaluation set.
* Serving's default model reference is the champion, not the newest model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from essayscore import champion
from essayscore.artifacts import ArtifactError, resolve

pytestmark = pytest.mark.slow


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A fresh artifacts folder that training, resolution and the pointer all use."""
    from essayscore.settings import get_settings

    folder = tmp_path / "artifacts"
    folder.mkdir()
    monkeypatch.setenv("ESSAYSCORE_ARTIFACTS_DIR", str(folder))
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()


def _copy(artifact: Path, root: Path) -> Path:
    dest = root / artifact.name
    shutil.copytree(artifact, dest)
    return dest


def test_the_default_model_reference_is_the_champion():
    from essayscore.settings import Settings

    assert Settings().model_tag == "champion"


def test_a_pointer_to_an_altered_or_missing_artifact_is_refused(trained_artifact, root):
    folder = _copy(trained_artifact, root)
    champion.promote(folder, root, "test")
    assert resolve("champion", root) == folder
    assert resolve("essayscore:champion", root) == folder

    victim = folder / "scoring.json"
    original = victim.read_bytes()
    victim.write_bytes(original.replace(b"{", b"{ ", 1))  # same content once parsed, different bytes
    with pytest.raises(champion.ChampionError, match="fails its own checks"):
        resolve("champion", root)
    victim.write_bytes(original)

    manifest = folder / "manifest.json"
    data = json.loads(manifest.read_text())
    data["created"] = "1970-01-01"
    manifest.write_text(json.dumps(data))
    with pytest.raises(champion.ChampionError, match="altered or replaced"):
        resolve("champion", root)

    pointer = root / "champion.json"  # a pointer to a version that exists nowhere (folder or model store)
    data = json.loads(pointer.read_text())
    data["current"]["version"] = "v19700101-000000"
    pointer.write_text(json.dumps(data))
    with pytest.raises(champion.ChampionError, match="missing"):
        resolve("champion", root)


def test_no_champion_is_a_clear_error(root):
    with pytest.raises(ArtifactError):
        champion.current_dir(root)
    with pytest.raises(champion.ChampionError, match="rollback|roll back|nothing"):
        champion.rollback(root)


def _shuffled(csv: Path, wi: Path, out: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    frame = pd.read_csv(csv)
    frame["band"] = rng.permutation(frame["band"].to_numpy())
    shuffled_csv = out / "shuffled.csv"
    frame.to_csv(shuffled_csv, index=False)
    # split on "\n" only: texts hold U+2028, which splitlines() would also split on
    rows = [json.loads(line) for line in wi.read_text(encoding="utf-8").split("\n") if line.strip()]
    levels = rng.permutation([r["cefr"] for r in rows])
    shuffled_wi = out / "shuffled-wi.jsonl"
    shuffled_wi.write_text("\n".join(json.dumps({**r, "cefr": str(lvl)}) for r, lvl in zip(rows, levels)) + "\n",
                           encoding="utf-8")
    return shuffled_csv, shuffled_wi


def _session_cfg(data: Path, wi: Path):
    """The configuration conftest's ``trained_artifact`` was trained with (same data, same seed)."""
    from training.fit import FitConfig, TreeConfig
    from training.train import TrainConfig

    return TrainConfig(data_path=str(data), wi_path=str(wi), pca_components=8,
                       fit=FitConfig(trees=TreeConfig(max_rounds=80, early_stopping_rounds=15)))


def test_the_gate_promotes_an_equal_challenger_refuses_a_degraded_one_and_rolls_back(
        trained_artifact, small_training_csv, small_wi_jsonl, root, tmp_path):
    from training import gate

    original = _copy(trained_artifact, root)
    champion.promote(original, root, "the session's model")

    equal = gate.retrain(_session_cfg(small_training_csv, small_wi_jsonl), root)
    print(Path(equal.report).read_text())
    assert equal.promote and equal.promoted, equal.reason
    assert resolve("champion", root).name == equal.challenger != original.name
    checks = {c.name: c for c in equal.checks}
    assert abs(checks["ielts_qwk"].challenger - checks["ielts_qwk"].champion) < 0.02
    assert checks["evaluation_essays_in_challenger_training"].challenger == 0
    pinned = json.loads((root / "evaluation" / "pinned.json").read_text())
    challenger_config = json.loads((root / equal.challenger / "config.json").read_text())
    assert challenger_config["train"]["evaluation_set_sha256"] == pinned["sha256"] == equal.evaluation_set["sha256"]
    assert "PROMOTED" in Path(equal.report).read_text()

    data, wi = _shuffled(small_training_csv, small_wi_jsonl, tmp_path)
    degraded = gate.retrain(_session_cfg(data, wi), root)
    print(Path(degraded.report).read_text())
    assert not degraded.promote and not degraded.promoted
    checks = {c.name: c for c in degraded.checks}
    assert not checks["ielts_qwk"].ok and not checks["bootstrap_lower_ielts_qwk_diff"].ok
    assert resolve("champion", root).name == equal.challenger  # the champion stays
    assert "REFUSED" in Path(degraded.report).read_text()
    assert degraded.evaluation_set["sha256"] == pinned["sha256"]  # judged on the same pinned set

    # the essayscore CLI: rollback restores the earlier champion; promote names one explicitly
    env = {**os.environ, "ESSAYSCORE_ARTIFACTS_DIR": str(root)}
    cli = [sys.executable, "-m", "essayscore.cli"]
    done = subprocess.run([*cli, "rollback"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert resolve("champion", root).name == original.name
    done = subprocess.run([*cli, "promote", equal.challenger], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and equal.challenger in done.stdout, done.stderr
    assert resolve("champion", root).name == equal.challenger

    # a changed evaluation set is refused, not silently re-pinned
    eval_file = root / "evaluation" / pinned["file"]
    eval_file.write_text(eval_file.read_text().replace('"essay": "', '"essay": "X', 1))
    with pytest.raises(ArtifactError, match="was changed"):
        gate.pinned_evaluation_set(root, resolve("champion", root))
