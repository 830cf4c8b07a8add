"""Planted drift on real models: essays of the shared IELTS test split must not flag, W&I's A1 texts must, and a real
two-worker Bento exports the drift metrics and writes the request log (see docs/monitoring.md).

A fair non-flag test needs a reference that describes the traffic: the session's ``trained_artifact`` learns from a
sample with the same number of essays at every CEFR level (its low and high bands are over-represented), so real
IELTS essays would rightly look drifted against it, and its held-out splits are ~40 IELTS essays. The first two
tests train their own model (IELTS only, no detector, no ONNX export: 700 essays, about a minute) on a
natural sample of the train and validation essays of the split the default training assigns, and log 200 essays
of that split's test part, which the model has never seen. The Bento test uses ``trained_artifact``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from essayscore.artifacts import Artifact
from essayscore.monitoring import BAND, CEFR, PSI_SIGNIFICANT, DriftReference, RequestMonitor, cefr_index, psi, read_log

CLI = [sys.executable, "-m", "essayscore.cli"]
TRAIN_ESSAYS, TEST_ESSAYS, A1_TEXTS = 700, 200, 150
SEED = 20261203


@pytest.fixture(scope="module")
def shared_ielts_split():
    """The shared IELTS essays with the split the default training (IELTS + W&I) assigns them."""
    from training.sources import load_sources
    from training.splits import assign_splits

    essays = load_sources(("ielts", "wi")).essays
    split = assign_splits(essays)["split"].to_numpy()
    ielts = (essays["source"] == "ielts").to_numpy()
    return essays[ielts].assign(split=split[ielts]).reset_index(drop=True)


@pytest.fixture(scope="module")
def ielts_model(shared_ielts_split, tmp_path_factory):
    """(artifact folder, its artifacts root): trained on a natural sample of the split's train + validation essays,
    in a folder of its own (not the session's, whose ``latest`` other tests read; not registered)."""
    from essayscore.settings import get_settings
    from training.fit import FitConfig, TreeConfig
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("drift-artifacts")
    sample = shared_ielts_split[shared_ielts_split["split"] != "test"].sample(n=TRAIN_ESSAYS, random_state=SEED)
    csv = root.parent / "drift-train.csv"
    sample[["prompt", "essay", "band_label", "origin"]].rename(columns={"band_label": "band"}).to_csv(csv, index=False)
    cfg = TrainConfig(sources=("ielts",), data_path=str(csv), error_detector=False, pca_components=0,
                      serving_encoder_variant=None,
                      fit=FitConfig(trees=TreeConfig(max_rounds=80, early_stopping_rounds=15)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESSAYSCORE_ARTIFACTS_DIR", str(root))
        get_settings.cache_clear()
        try:
            folder = train(cfg, register=False)
        finally:
            get_settings.cache_clear()  # the session's settings again once the variable is restored
    return folder, root


@pytest.fixture(scope="module")
def ielts_api(ielts_model):
    from essayscore.scoring_api import ScoringApi
    from essayscore.settings import Settings

    folder, root = ielts_model
    return ScoringApi(Settings(model_tag=str(folder), artifacts_dir=root, runtime="embedded"))


def log_through_the_service_path(api, items: list[dict], log_dir: Path) -> None:
    """Score ``items`` with ScoringApi (the one request path both transports take), logging to ``log_dir``."""
    from essayscore.settings import Settings

    api.monitor = RequestMonitor(api.artifact, Settings(monitor_log_dir=log_dir))
    for start in range(0, len(items), 32):
        answered = api.score_many(items[start:start + 32])
        assert all(outcome.ok for outcome, _ in answered), [o.error for o, _ in answered if not o.ok]


def drift_command(log_dir: Path, out: Path, artifacts_root: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """``essayscore drift --log DIR --out OUT`` (its default model: the one the log names); (run, PSI by name)."""
    env = {**os.environ, "ESSAYSCORE_ARTIFACTS_DIR": str(artifacts_root)}
    run = subprocess.run([*CLI, "drift", "--log", str(log_dir), "--out", str(out)], capture_output=True, text=True,
                         env=env, timeout=300)
    figures = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+)\s+\d+\s+([\d.]+)\s", run.stdout, re.M)}
    return run, figures


def moved_section(report: str) -> set[str]:
    if "## Moved" not in report:
        return set()
    return set(re.findall(r"^- \*\*(\w+)\*\*", report.split("## Moved")[1].split("## All")[0], re.M))


@pytest.mark.slow  # trains a model and scores 200 essays
def test_the_reference_describes_ielts_rows_and_monitors_the_models_most_important_features(ielts_model):
    folder, _ = ielts_model
    artifact = Artifact(folder)
    data = artifact.drift_reference
    reference = DriftReference.from_artifact(artifact)
    assert data["population"]["features"] == "ielts rows of the train split"
    assert data["population"]["outputs"] == "ielts rows of the validation + test split"
    importance = {name: f["importance"] or 0.0 for name, f in data["features"].items()}
    names = [q.name for q in reference.features]
    assert len(names) == 10 and names == sorted(importance, key=lambda n: -importance[n])[:10]
    assert all(importance[n] > 0 for n in names)
    assert sum(data["outputs"][BAND]["distribution"].values()) == pytest.approx(1.0)


@pytest.mark.slow  # trains a model and scores 200 essays
def test_essays_of_the_shared_ielts_test_split_do_not_flag(ielts_model, ielts_api, shared_ielts_split, tmp_path):
    test = shared_ielts_split[shared_ielts_split["split"] == "test"].sample(n=TEST_ESSAYS, random_state=SEED)
    log_through_the_service_path(ielts_api, [{"essay": r.essay, "prompt": r.prompt} for r in test.itertuples()],
                                 tmp_path / "log")
    run, figures = drift_command(tmp_path / "log", tmp_path / "report", ielts_model[1])
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    reference = DriftReference.from_artifact(Artifact(ielts_model[0]))
    assert set(figures) == {q.name for q in reference.quantities}
    # the scores do not move; single features may (the split is three prompts), at most half of them
    assert figures[BAND] <= PSI_SIGNIFICANT and figures[CEFR] <= PSI_SIGNIFICANT, figures
    moved_features = {n for n in figures if n not in (BAND, CEFR) and figures[n] > PSI_SIGNIFICANT}
    assert len(moved_features) <= len(reference.features) / 2, figures
    assert "no drift" in run.stdout
    assert moved_section((tmp_path / "report" / "drift.md").read_text()) == moved_features  # named all the same


@pytest.mark.slow  # trains a model and scores 150 texts
def test_w_and_i_a1_texts_flag_and_the_report_names_what_moved(ielts_model, ielts_api, tmp_path):
    from training.sources import load_wi

    wi = load_wi().essays
    a1 = wi[wi["cefr"] == "A1"].sort_values("essay_id").head(A1_TEXTS)
    log_through_the_service_path(ielts_api, [{"essay": text} for text in a1["essay"]], tmp_path / "log")
    run, figures = drift_command(tmp_path / "log", tmp_path / "report", ielts_model[1])
    print(run.stdout)
    assert run.returncode == 1, run.stdout + run.stderr
    flagged = {name for name, value in figures.items() if value > PSI_SIGNIFICANT}
    report = (tmp_path / "report" / "drift.md").read_text()
    assert moved_section(report) == flagged  # the report names exactly what moved
    assert BAND in flagged and len(flagged - {BAND, CEFR}) >= 2
    assert f"PSI above {PSI_SIGNIFICANT:g}" in run.stdout and (tmp_path / "report" / "drift.png").is_file()


# ---------------------------------------------------------------------------------------------------------------
# A real Bento with two workers
# ---------------------------------------------------------------------------------------------------------------
def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format -> (name, labels, value) samples."""
    samples = []
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


@pytest.mark.slow  # starts a two-worker Bento
def test_a_two_worker_bento_exports_decile_histograms_and_a_correct_rolling_psi_per_worker(
        trained_artifact, shared_essays, tmp_path):
    httpx = pytest.importorskip("httpx")
    from devtools.servers import BentoServer

    reference = DriftReference.from_artifact(Artifact(trained_artifact))
    essays = shared_essays.sample(n=16, random_state=SEED)
    texts = list(essays["essay"])
    log_dir = tmp_path / "monitor"
    with BentoServer(trained_artifact, ESSAYSCORE_RUNTIME="embedded", ESSAYSCORE_WORKERS="2",
                     ESSAYSCORE_MONITOR_LOG_DIR=str(log_dir), ESSAYSCORE_MONITOR_MIN_ROWS="3",
                     ESSAYSCORE_MONITOR_WINDOW="50") as bento:

        def score(row) -> int:  # a fresh connection each: the two workers accept connections in turn
            with httpx.Client(base_url=bento.url, timeout=300) as client:
                return client.post("/score", json={"essay": row.essay, "prompt": row.prompt}).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(score, essays.itertuples())) == [200] * len(essays)
        time.sleep(0.5)
        samples = parse_metrics(httpx.get(bento.url + "/metrics", timeout=30).text)

    # the request log: one file per worker, one row per essay, no text
    files = sorted(log_dir.glob("requests-*.jsonl"))
    rows = read_log(log_dir)
    assert len(rows) == len(essays) and 1 <= len(files) <= 2
    assert not any(t[:80] in f.read_text() for f in files for t in texts) and all("text" not in r for r in rows)
    assert all(set(r["features"]) == {q.name for q in reference.features} for r in rows)

    # histograms whose buckets are the reference's deciles, counting every essay
    for q, metric in [*[(q, f"essayscore_feature_{q.name}") for q in reference.features],
                      (reference.band, "essayscore_predicted_half_band"),
                      (reference.cefr, "essayscore_predicted_cefr_index")]:
        buckets = {float(labels["le"]): v for name, labels, v in samples if name == metric + "_bucket"}
        assert sorted(buckets) == [*q.bins.edges, float("inf")], metric
        finite = sum(1 for r in rows if (r[BAND] if q.name == BAND else cefr_index(r[CEFR]) if q.name == CEFR
                                         else r["features"][q.name]) is not None)
        assert buckets[float("inf")] == finite, metric
    assert any(name == "essayscore_stage_seconds_bucket" for name, _, _ in samples)  # latency histograms stay
    shares = [(labels, v) for name, labels, v in samples if name == "essayscore_drift_reference_share"]
    assert {labels["feature"] for labels, _ in shares} == {q.name for q in reference.quantities}

    # the rolling PSI: one series per worker (pid), equal to PSI over that worker's own logged essays
    gauges = [(labels, v) for name, labels, v in samples if name == "essayscore_drift_psi"]
    by_pid = {f.name.split("-")[-2]: read_log_file(f) for f in files}
    assert {labels["pid"] for labels, _ in gauges} >= set(by_pid)
    for labels, value in gauges:
        worker_rows = by_pid.get(labels["pid"], [])
        q = next(q for q in reference.quantities if q.name == labels["feature"])
        if len(worker_rows) < 3:
            assert np.isnan(value)
            continue
        values = [np.nan if v is None else v for v in (
            r[BAND] if q.name == BAND else cefr_index(r[CEFR]) if q.name == CEFR else r["features"][q.name]
            for r in worker_rows)]
        assert value == pytest.approx(psi(q.bins.reference, q.bins.shares_of(values)), abs=1e-9), labels
    print(f"workers that scored: {len(files)}; rows per worker: {[len(r) for r in by_pid.values()]}")


def read_log_file(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
