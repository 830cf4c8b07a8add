"""The real pipeline end to end: train a small model, verify the artifact, score CSVs with the CLI."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from essayscore import artifacts
from essayscore.bands import CEFR_LEVELS
from essayscore.pipeline import EssayScorer

CLI = [sys.executable, "-m", "essayscore.cli"]


def test_training_writes_a_complete_verified_registered_artifact(trained_artifact):
    manifest = artifacts.verify(trained_artifact)
    for name in ("regressor.json", "classifier.json", "preprocessor.npz", "scoring.json", "feature_registry.json",
                 "feature_stats.json", "config.json", "metrics.json", "splits.csv", "data_report.json"):
        assert name in manifest["files"], name
    metrics = json.loads((trained_artifact / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"train", "validation", "test"}
    for split in metrics["splits"].values():
        assert 0 <= split["rmse"] < 3 and -1 <= split["qwk"] <= 1 and 0 <= split["cefr_ece"] <= 1
    # a real model learns something even from ~260 essays: it beats predicting the mean on held-out essays
    assert metrics["splits"]["test"]["qwk"] > 0.2
    scoring = json.loads((trained_artifact / "scoring.json").read_text())
    assert np.all(np.diff(scoring["cuts"]) > 0) and scoring["temperature"] > 0
    stored = artifacts.resolve(f"essayscore:{manifest['version']}")
    assert artifacts.verify(stored)["files"] == manifest["files"]


def test_artifact_ships_a_validated_int8_encoder_that_the_embedded_runtime_serves(trained_artifact):
    from essayscore.onnx_encoder import OnnxEncoder
    from essayscore.runtimes import load_runtime

    manifest = artifacts.verify(trained_artifact)  # the export is covered by the manifest
    assert {"encoder_onnx/encoder.int8.onnx", "encoder_onnx/onnx_encoder.json"} <= set(manifest["files"])
    report = json.loads((trained_artifact / "encoder_onnx" / "export_report.json").read_text())
    int8 = report["variants"]["int8"]
    assert int8["passed"] is True and abs(int8["band_check"]["qwk_delta"]) <= int8["band_check"]["qwk_tolerance"]
    runtime = load_runtime("embedded", trained_artifact)
    assert runtime.encoder_backend == "onnx-int8" and isinstance(runtime.scorer.encoder, OnnxEncoder)
    # against the PyTorch encoder the trees were trained on: close, not identical (validated above on QWK)
    from essayscore.runtimes import Item
    from essayscore.runtimes.embedded import EmbeddedRuntime

    items = [Item("Museums should be free so that everyone can learn about history and art. " * 20),
             Item("Young people should learn to cook at school because it keeps them healthy. " * 12, "Cooking")]
    onnx_raw = runtime.score(items[:1]).scored[0].result["ielts_raw"]
    torch_raw = EmbeddedRuntime(trained_artifact).score(items[:1]).scored[0].result["ielts_raw"]
    assert abs(onnx_raw - torch_raw) < 0.5
    # an essay's score does not depend on its batch-mates, int8 or not
    together = [s.result["ielts_raw"] for s in runtime.score(items).scored]
    assert together == pytest.approx([onnx_raw, runtime.score(items[1:]).scored[0].result["ielts_raw"]], abs=1e-6)


def test_scorer_outputs_are_consistent(trained_artifact):
    scorer = EssayScorer(trained_artifact)
    essays = ["Technology changes how we study. " * 30, "Public transport is better than cars for cities. " * 25]
    results = scorer.score(essays, ["Is technology good for education?", None])
    for r in results:
        res = r.result
        assert res["ielts_band"] * 2 == int(res["ielts_band"] * 2)
        low, high = res["band_interval"]
        assert low <= res["ielts_band"] <= high
        assert abs(sum(res["cefr_probabilities"].values()) - 1) < 1e-6
        assert list(res["cefr_probabilities"]) == list(CEFR_LEVELS)
        assert r.x.shape == (len(scorer.model.feature_names),)
    assert np.isnan(results[1].handcrafted).any()  # prompt features are missing without a prompt
    # scoring is deterministic and independent of batch composition
    alone = scorer.score(essays[:1], ["Is technology good for education?"])[0]
    assert alone.result["ielts_raw"] == pytest.approx(results[0].result["ielts_raw"], abs=1e-5)


def test_repeated_prompts_are_embedded_once(trained_artifact):
    scorer = EssayScorer(trained_artifact)
    prompt, essays = "Is technology good for education?", ["Technology changes how we study. " * 30,
                                                          "Computers help pupils learn faster. " * 20]
    encoded: list[int] = []
    windows = scorer.encoder.windows
    scorer.encoder.windows = lambda texts: (encoded.append(len(texts)), windows(texts))[1]
    first = scorer.score(essays, [prompt, prompt])  # two essays + the prompt once
    again = scorer.score(essays[:1], [prompt])  # the prompt comes from the cache
    assert encoded == [3, 1]
    assert again[0].handcrafted.tolist() == pytest.approx(first[0].handcrafted.tolist(), abs=1e-5, nan_ok=True)
    assert again[0].result["ielts_raw"] == pytest.approx(first[0].result["ielts_raw"], abs=1e-5)


def test_loading_refuses_a_tampered_artifact(trained_artifact, tmp_path):
    import shutil

    copy = tmp_path / trained_artifact.name
    shutil.copytree(trained_artifact, copy)
    with open(copy / "scoring.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(artifacts.ArtifactError, match="sha256 mismatch in scoring.json"):
        EssayScorer(copy)


def test_cli_scores_a_csv_with_bad_rows_in_order(trained_artifact, shared_essays, tmp_path):
    good = shared_essays.sample(36, random_state=3)  # more than one streaming chunk (32 rows)
    rows = [{"essay_id": f"e{i}", "prompt": p, "essay": e} for i, (p, e) in enumerate(zip(good["prompt"], good["essay"]))]
    rows.insert(5, {"essay_id": "empty", "prompt": "", "essay": "   "})
    rows.insert(20, {"essay_id": "digits", "prompt": "", "essay": "12345 678 !!!"})
    rows.insert(33, {"essay_id": "control", "prompt": "", "essay": "An essay with a bell \x07 character in it."})
    rows.append({"essay_id": "huge", "prompt": "", "essay": "word " * 5000})
    path = tmp_path / "in.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["essay_id", "prompt", "essay"])
        writer.writeheader()
        writer.writerows(rows)
    with open(path, "ab") as handle:  # a row whose bytes are not UTF-8
        handle.write(b'latin1,,"Caf\xe9 culture is a popular topic in essays about cities and people."\r\n')
    out = tmp_path / "out.csv"
    done = subprocess.run([*CLI, "score", str(path), "-o", str(out), "--model", str(trained_artifact)],
                          capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert "5 rows have an error" in done.stdout
    with open(out, newline="", encoding="utf-8") as handle:
        result = list(csv.DictReader(handle))
    assert [r["essay_id"] for r in result] == [r["essay_id"] for r in rows] + ["latin1"]
    errors = {r["essay_id"]: r["error"] for r in result if r["error"]}
    assert set(errors) == {"empty", "digits", "control", "huge", "latin1"}
    assert errors["empty"].startswith("empty") and errors["digits"].startswith("no_letters")
    assert errors["control"].startswith("control_characters") and "U+0007" in errors["control"]
    assert errors["huge"].startswith("too_long") and errors["latin1"].startswith("invalid_utf8")
    # the good rows equal what the service's embedded runtime gives for the same essays (same int8 encoder)
    from essayscore.runtimes import load_runtime

    scorer = load_runtime("embedded", trained_artifact).scorer
    expected = scorer.score(list(good["essay"][:3]), list(good["prompt"][:3]))
    for row, exp in zip([r for r in result if not r["error"]][:3], expected):
        assert float(row["ielts_band"]) == exp.result["ielts_band"]
        assert row["cefr"] == exp.result["cefr"]
        assert float(row["cefr_prob_C1"]) == pytest.approx(exp.result["cefr_probabilities"]["C1"], abs=1e-5)


def test_cli_reports_a_missing_model_clearly(tmp_path):
    done = subprocess.run([*CLI, "info", "--model", "essayscore:v19990101-000000"], capture_output=True, text=True)
    assert done.returncode == 2 and "no artifact" in done.stderr and "Traceback" not in done.stderr
