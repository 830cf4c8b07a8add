"""Drift statistics, the rolling window, the request log and the drift report on known distributions (fast: no
model, no server). The planted-drift tests on a real model and a real Bento are in tests/test_drift.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from essayscore import artifacts
from essayscore.artifacts import Artifact, Layout
from essayscore.bands import CEFR_LEVELS
from essayscore.drift import compare, table, verdict, write_report
from essayscore.monitoring import (
    BAND,
    CEFR,
    Bins,
    DriftReference,
    NoDriftReference,
    RequestLog,
    RequestMonitor,
    RollingPsi,
    ks_test,
    psi,
    read_log,
)
from essayscore.result import EssayResult
from essayscore.settings import Settings

CLI = [sys.executable, "-m", "essayscore.cli"]
RNG_SEED = 20261203


def rng(offset: int = 0) -> np.random.Generator:
    return np.random.default_rng(RNG_SEED + offset)


# ---------------------------------------------------------------------------------------------------------------
# Bins, PSI, KS
# ---------------------------------------------------------------------------------------------------------------
def test_decile_bins_of_a_continuous_quantity_hold_a_tenth_each_and_account_for_missing_values():
    values = np.concatenate([rng().normal(250, 60, 5000), [np.nan] * 500])
    bins = Bins.from_values(values)
    assert len(bins.edges) == 9 and bins.n == 11
    assert np.all(np.diff(bins.edges) > 0)
    assert bins.missing_share == pytest.approx(500 / 5500)
    assert sum(bins.shares) + bins.missing_share == pytest.approx(1.0)
    assert np.allclose(np.array(bins.shares) / (1 - bins.missing_share), 0.1, atol=0.002)
    assert np.array_equal(bins.reference, bins.shares_of(values))  # the stored shares are the values' own


def test_bins_are_right_closed_like_prometheus_buckets_and_ties_merge():
    counts = np.repeat([0.0, 1.0, 2.0, 3.0], [600, 200, 150, 50])  # a discrete quantity, mostly zeros
    bins = Bins.from_values(counts)
    assert bins.edges == tuple(sorted(set(bins.edges))) and len(bins.edges) < 9  # tied deciles merged
    assert bins.edges[0] == 0.0 and bins.shares[0] == pytest.approx(0.6)  # "le 0" holds exactly the zeros
    # a value equal to an edge falls in that edge's bucket (value <= le), beyond the last edge in the open bin
    assert list(bins.index([0.0, 1e-9, bins.edges[-1], bins.edges[-1] + 1e-9, np.nan])) == \
        [0, 1, len(bins.edges) - 1, len(bins.edges), bins.n - 1]
    assert Bins.from_dict(json.loads(json.dumps(bins.to_dict()))) == bins


def test_psi_is_zero_for_identical_distributions_symmetric_and_grows_with_the_shift():
    bins = Bins.from_values(rng().normal(0, 1, 20_000))
    same = bins.shares_of(rng(1).normal(0, 1, 20_000))
    assert psi(bins.reference, bins.reference) == 0.0
    assert psi(bins.reference, same) < 0.01  # another sample of the same distribution
    shifted = [bins.shares_of(rng(2).normal(shift, 1, 20_000)) for shift in (0.1, 0.3, 0.6, 1.0)]
    values = [psi(bins.reference, s) for s in shifted]
    assert values == sorted(values) and values[0] < 0.1 < values[-1]
    assert values[-1] > 0.25  # one standard deviation: significant by the usual reading
    assert psi(bins.reference, shifted[2]) == pytest.approx(psi(shifted[2], bins.reference))
    # every value in a bin the reference never saw: large, finite (the share floor)
    unseen = np.zeros(bins.n)
    unseen[-1] = 1.0
    assert np.isfinite(psi(bins.reference, unseen)) and psi(bins.reference, unseen) > 1


def test_psi_over_missing_values_counts_a_feature_that_stops_arriving():
    values = rng().normal(0, 1, 5000)
    bins = Bins.from_values(values)
    half_missing = np.where(rng(1).random(5000) < 0.5, np.nan, rng(2).normal(0, 1, 5000))
    assert psi(bins.reference, bins.shares_of(half_missing)) > 1


def test_ks_test_tells_a_sample_of_the_same_distribution_from_a_shifted_one():
    reference = rng().normal(0, 1, 1000)
    _, p_same = ks_test(reference, rng(1).normal(0, 1, 300))
    d_shift, p_shift = ks_test(reference, rng(2).normal(0.8, 1, 300))
    assert p_same > 0.01 and p_shift < 1e-6 and d_shift > 0.2
    assert np.isnan(ks_test(reference, [np.nan])[1])  # nothing to compare


# ---------------------------------------------------------------------------------------------------------------
# A reference, the rolling window, the request log
# ---------------------------------------------------------------------------------------------------------------
def reference_dict(n: int = 3000) -> dict:
    """A drift reference in the artifact's JSON format, from known distributions: two features, band, CEFR."""
    word_count = rng(10).normal(290, 70, n)
    error_rate = rng(11).gamma(2.0, 1.5, n)
    band = np.clip(np.round(rng(12).normal(6.2, 1.0, n) * 2) / 2, 3.5, 9.0)
    cefr = np.searchsorted([4.0, 5.0, 6.0, 7.0, 8.5], band, side="right").astype(float)
    features = {"word_count": word_count, "grammar_per_100w": error_rate}
    return {
        "format": 1, "population": {"features": "synthetic", "feature_rows": n},
        "monitored": list(features),
        "features": {k: {**Bins.from_values(v).to_dict(), "importance": 1.0 / (i + 1)}
                     for i, (k, v) in enumerate(features.items())},
        "outputs": {BAND: Bins.from_values(band).to_dict(), CEFR: Bins.from_values(cefr).to_dict()},
        "samples": {**{k: v[:1000].tolist() for k, v in features.items()}, BAND: band[:1000].tolist(),
                    CEFR: cefr[:1000].tolist()},
    }


def log_rows(n: int, offset: int, words_mean: float = 290, band_mean: float = 6.2,
             errors_scale: float = 1.5) -> list[dict]:
    band = np.clip(np.round(rng(offset).normal(band_mean, 1.0, n) * 2) / 2, 3.5, 9.0)
    cefr = np.searchsorted([4.0, 5.0, 6.0, 7.0, 8.5], band, side="right")
    words = rng(offset + 1).normal(words_mean, 70, n)
    errors = rng(offset + 2).gamma(2.0, errors_scale, n)
    return [{"model_version": "vtest", "features": {"word_count": float(w), "grammar_per_100w": float(e)},
             BAND: float(b), CEFR: CEFR_LEVELS[int(c)]} for w, e, b, c in zip(words, errors, band, cefr)]


def test_the_rolling_window_is_bounded_and_equals_psi_over_its_last_rows():
    reference = DriftReference.from_dict(reference_dict())
    window = RollingPsi(reference, size=200, min_rows=50)
    rows = log_rows(150, 100) + log_rows(450, 200, words_mean=150)  # the traffic turns short
    flat = [{**r["features"], BAND: r[BAND], CEFR: float(CEFR_LEVELS.index(r[CEFR]))} for r in rows]
    published = [window.add(v) for v in flat]
    assert all(p is None for p in published[:49]) and published[49] is not None
    assert len(window) == 200
    last = flat[-200:]
    for q in reference.quantities:
        expected = psi(q.bins.reference, q.bins.shares_of([v[q.name] for v in last]))
        assert published[-1][q.name] == pytest.approx(expected)
    # the window forgets: PSI of word_count was small over reference-like traffic, large once it is all short
    assert published[149]["word_count"] < 0.25 < published[-1]["word_count"]
    assert published[-1]["grammar_per_100w"] < 0.25


def test_the_request_log_rotates_by_size_and_by_day_and_every_line_is_whole(tmp_path):
    log = RequestLog(tmp_path, max_bytes=2_000)
    day = datetime(2026, 12, 3, 23, 59, tzinfo=timezone.utc)
    rows = log_rows(60, 300)
    for i, row in enumerate(rows):
        log.write(row, now=day if i < 40 else day + timedelta(minutes=2))
    log.close()
    files = sorted(tmp_path.glob("requests-*.jsonl"))
    assert len(files) > 2 and all(f.stat().st_size <= 2_000 for f in files)
    assert {f.name.split("-")[1] for f in files} == {"20261203", "20261204"}
    assert all(f"-{os.getpid()}-" in f.name for f in files)
    assert [r["features"] for r in read_log(tmp_path)] == [r["features"] for r in rows]


def test_worker_processes_write_their_own_files_without_interleaving(tmp_path):
    """Two real processes log at the same time into one folder: one file each, every line a whole row."""
    script = ("import sys; from pathlib import Path; from essayscore.monitoring import RequestLog\n"
              "log = RequestLog(Path(sys.argv[1]))\n"
              "for i in range(300): log.write({'worker': sys.argv[2], 'i': i, 'pad': 'x' * 500})\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name]) for name in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    files = sorted(tmp_path.glob("requests-*.jsonl"))
    assert len(files) == 2
    for f in files:
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        assert len(rows) == 300 and len({r["worker"] for r in rows}) == 1 and [r["i"] for r in rows] == list(range(300))


# ---------------------------------------------------------------------------------------------------------------
# An artifact without a reference; the monitor of ScoringApi
# ---------------------------------------------------------------------------------------------------------------
def bare_artifact(root: Path, reference: dict | None = None) -> Path:
    """An artifact folder that opens (manifest, this code's registry) with or without a drift reference."""
    folder = root / "v20260101-000000"
    folder.mkdir(parents=True)
    (folder / Layout.REGISTRY).write_text(json.dumps(artifacts.code_registry()))
    if reference is not None:
        (folder / Layout.DRIFT_REFERENCE).write_text(json.dumps(reference))
    artifacts.write_manifest(folder, folder.name)
    return folder


def essay_result(words: float, band: float) -> EssayResult:
    from essayscore.features.registry import FEATURE_INDEX, FEATURES

    handcrafted = np.full(len(FEATURES), np.nan, dtype=np.float32)
    handcrafted[FEATURE_INDEX["word_count"]] = words
    cefr = CEFR_LEVELS[int(np.searchsorted([4.0, 5.0, 6.0, 7.0, 8.5], band, side="right"))]
    return EssayResult(band, band + 0.1, (band - 1, band + 1), cefr, dict.fromkeys(CEFR_LEVELS, 1 / 6), 0.0,
                       "v20260101-000000", np.zeros(3, dtype=np.float32), handcrafted)


def test_an_artifact_without_a_reference_says_retrain_and_the_service_still_logs_its_outputs(tmp_path, caplog):
    artifact = Artifact(bare_artifact(tmp_path / "artifacts"))
    with pytest.raises(NoDriftReference, match="retrain"):
        DriftReference.from_artifact(artifact)
    monitor = RequestMonitor(artifact, Settings(monitor_log_dir=tmp_path / "log"))
    assert monitor.reference is None and "no drift reference" in caplog.text
    monitor.export_to(None)  # nothing to export: no metric is made
    monitor.record(essay_result(280, 6.5), "embedded", 12.5, "The essay text.")
    (row,) = read_log(tmp_path / "log")
    assert row[BAND] == 6.5 and row[CEFR] == "B2" and row["features"] == {} and "text" not in row


def test_the_monitor_logs_monitored_features_and_outputs_never_the_text_unless_asked(tmp_path):
    artifact = Artifact(bare_artifact(tmp_path / "artifacts", reference_dict()))
    text = "A distinctive essay sentence that must not reach the log."
    for log_text, folder in ((False, "plain"), (True, "with-text")):
        monitor = RequestMonitor(artifact, Settings(monitor_log_dir=tmp_path / folder, monitor_log_text=log_text))
        monitor.record(essay_result(250, 6.0), "embedded", 40.0, text)
        (row,) = read_log(tmp_path / folder)
        assert row["features"] == {"word_count": 250.0, "grammar_per_100w": None}  # NaN logged as null
        assert row["model_version"] == "v20260101-000000" and row["latency_ms"] == 40.0
        assert set(row) >= {"time", "runtime", BAND, "ielts_raw", CEFR}
        assert (text in "".join(p.read_text() for p in (tmp_path / folder).glob("*.jsonl"))) is log_text


def test_prometheus_export_uses_the_reference_deciles_as_buckets(tmp_path):
    import bentoml

    reference = reference_dict()
    artifact = Artifact(bare_artifact(tmp_path / "artifacts", reference))
    monitor = RequestMonitor(artifact, Settings(monitor_min_rows=1))
    metrics = bentoml.metrics  # BentoML 1.4 forwards it to prometheus_client (with a DeprecationWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        generate_latest = metrics.generate_latest
        monitor.export_to(metrics)
    monitor.record(essay_result(250, 6.0), "embedded", 40.0)
    text = generate_latest().decode()
    buckets = [float(line.split('le="')[1].split('"')[0]) for line in text.splitlines()
               if line.startswith("essayscore_feature_word_count_bucket")]
    assert buckets == [*reference["features"]["word_count"]["edges"], float("inf")]
    assert 'essayscore_drift_psi{feature="word_count"}' in text
    assert "essayscore_predicted_half_band_count 1.0" in text
    assert 'essayscore_drift_reference_share{feature="ielts_band",le="+Inf"}' in text


# ---------------------------------------------------------------------------------------------------------------
# The report and the command
# ---------------------------------------------------------------------------------------------------------------
def test_the_report_flags_and_names_only_what_moved(tmp_path):
    reference = DriftReference.from_dict(reference_dict())
    stable = compare(reference, log_rows(400, 400))
    assert not stable.drifted and all(r.psi < 0.1 for r in stable.results)
    moved = compare(reference, log_rows(400, 500, words_mean=120, band_mean=4.5))
    assert {r.name for r in moved.moved} >= {"word_count", BAND} and "grammar_per_100w" not in \
        {r.name for r in moved.moved}
    report = write_report(moved, tmp_path / "report").read_text()
    section = report.split("## Moved")[1].split("## All")[0]
    assert "word_count" in section and BAND in section and "grammar_per_100w" not in section
    assert (tmp_path / "report" / "drift.png").stat().st_size > 10_000
    assert "significant" in table(moved) and "significant" not in table(stable)


def test_drift_is_a_moved_output_or_most_monitored_features_not_one_feature_alone():
    reference = DriftReference.from_dict(reference_dict())
    one_feature = log_rows(400, 700, errors_scale=3.0)  # more errors, same length and band (e.g. a new prompt)
    report = compare(reference, one_feature)
    assert [r.name for r in report.moved] == ["grammar_per_100w"] and not report.drifted
    assert "no drift" in verdict(report) and "1 of 2 monitored features above 0.25" in verdict(report)
    assert compare(reference, one_feature, feature_share=0.0).drifted  # strict: any one feature
    both = compare(reference, log_rows(400, 800, words_mean=150, errors_scale=3.0))
    assert {r.name for r in both.moved} >= {"word_count", "grammar_per_100w"} and both.drifted


def run_cli(*args: str, artifacts_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ESSAYSCORE_ARTIFACTS_DIR": str(artifacts_dir)}
    return subprocess.run([*CLI, "drift", *args], capture_output=True, text=True, env=env, timeout=120)


def test_the_command_refuses_a_missing_log_too_few_rows_and_a_model_without_a_reference(tmp_path):
    root = tmp_path / "artifacts"
    folder = bare_artifact(root)
    missing = run_cli("--log", str(tmp_path / "nowhere"), "--model", folder.name, artifacts_dir=root)
    assert missing.returncode == 2 and "no request log folder" in missing.stderr
    log = RequestLog(tmp_path / "log")
    for row in log_rows(120, 600):
        log.write({**row, "model_version": folder.name})
    log.close()
    unreferenced = run_cli("--log", str(tmp_path / "log"), artifacts_dir=root)  # the log's model resolves
    assert unreferenced.returncode == 2 and "no drift reference" in unreferenced.stderr \
        and "retrain" in unreferenced.stderr
    other_root = tmp_path / "artifacts2"
    referenced = bare_artifact(other_root, reference_dict())
    few = run_cli("--log", str(tmp_path / "log"), "--model", referenced.name, "--min-rows", "500",
                  "--out", str(tmp_path / "out"), artifacts_dir=other_root)
    assert few.returncode == 2 and "fewer than --min-rows 500" in few.stderr
    ok = run_cli("--log", str(tmp_path / "log"), "--model", referenced.name, "--out", str(tmp_path / "out"),
                 artifacts_dir=other_root)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no drift" in ok.stdout and (tmp_path / "out" / "drift.md").is_file()
    strict = run_cli("--log", str(tmp_path / "log"), "--model", referenced.name, "--threshold", "0.0001",
                     "--out", str(tmp_path / "out"), artifacts_dir=other_root)
    assert strict.returncode == 1 and "DRIFT" in strict.stdout
