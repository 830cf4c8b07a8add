"""The real pipeline end to end: train a small model, verify the artifact, score CSVs with the CLI."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from essayscore import artifacts
from essayscore.artifacts import Layout
from essayscore.bands import CEFR_LEVELS
from essayscore.essay_scorer import EssayScorer
from essayscore.features import FEATURES

CLI = [sys.executable, "-m", "essayscore.cli"]


@pytest.mark.slow  # trains, or uses the session's trained artifact
def test_training_writes_a_complete_verified_registered_artifact(trained_artifact):
    manifest = artifacts.verify(trained_artifact)
    for name in (Layout.TREES, Layout.PREPROCESSOR, Layout.SCORING, Layout.REGISTRY, Layout.DETECTOR,
                 Layout.FEATURE_STATS, Layout.CONFIG, Layout.METRICS, Layout.SPLITS, Layout.DATA_REPORT,
                 Layout.SOURCES, Layout.MODEL_CARD):
        assert name in manifest["files"], name
    metrics = json.loads((trained_artifact / Layout.METRICS).read_text())
    assert set(metrics["splits"]) == {"train", "validation", "test"}
    for split in metrics["splits"].values():
        assert 0 <= split["ielts_rmse"] < 3 and -1 <= split["ielts_qwk"] <= 1 and 0 <= split["ielts_cefr_ece"] <= 1
        assert -1 <= split["wi_spearman"] <= 1 and -1 <= split["wi_cefr_qwk"] <= 1
    # a real model learns something even from ~260 + ~360 texts: it ranks held-out texts of both sources
    assert metrics["splits"]["test"]["ielts_qwk"] > 0.2 and metrics["splits"]["test"]["wi_spearman"] > 0.3
    scoring = json.loads((trained_artifact / Layout.SCORING).read_text())
    wi_cuts = scoring["source_cuts"]["wi"]
    assert len(wi_cuts) == 11 and np.all(np.diff(wi_cuts) > 0) and 0 < scoring["scale"] <= 0.9
    assert 0 < scoring["length_weight"] <= 0.75 and -2 <= scoring["under_length_weight"] <= 0
    stored = artifacts.resolve(f"essayscore:{manifest['version']}")
    assert artifacts.verify(stored)["files"] == manifest["files"]


@pytest.mark.slow  # trains, or uses the session's trained artifact
def test_artifact_ships_a_validated_int8_encoder_that_the_embedded_runtime_serves(trained_artifact):
    from essayscore.onnx_encoder import OnnxEncoder
    from essayscore.runtimes import load_runtime

    manifest = artifacts.verify(trained_artifact)  # the export is covered by the manifest
    assert {"encoder_onnx/encoder.int8.onnx", "encoder_onnx/onnx_encoder.json"} <= set(manifest["files"])
    report = json.loads((trained_artifact / Layout.ONNX_EXPORT / "export_report.json").read_text())
    int8 = report["variants"]["int8"]
    assert int8["passed"] is True and abs(int8["band_check"]["qwk_delta"]) <= int8["band_check"]["qwk_tolerance"]
    runtime = load_runtime("embedded", trained_artifact)
    assert runtime.encoder_backend == "onnx-int8" and isinstance(runtime.scorer.encoder, OnnxEncoder)
    # against the PyTorch encoder the trees were trained on: close, not identical (validated above on QWK)
    from essayscore.runtimes import Item
    from essayscore.runtimes.embedded import EmbeddedRuntime

    items = [Item("Museums should be free so that everyone can learn about history and art. " * 20),
             Item("Young people should learn to cook at school because it keeps them healthy. " * 12, "Cooking")]
    onnx_raw = runtime.score(items[:1]).results[0].ielts_raw
    torch_raw = EmbeddedRuntime(trained_artifact).score(items[:1]).results[0].ielts_raw
    assert abs(onnx_raw - torch_raw) < 0.5
    # an essay's score does not depend on its batch-mates, int8 or not
    together = [s.ielts_raw for s in runtime.score(items).results]
    assert together == pytest.approx([onnx_raw, runtime.score(items[1:]).results[0].ielts_raw], abs=1e-6)


@pytest.mark.slow  # trains, or uses the session's trained artifact
def test_metadata_and_model_card_name_every_source_and_the_inherited_licence(trained_artifact):
    manifest = artifacts.verify(trained_artifact)
    assert manifest["sources"] == ["ielts", "wi"] and "non-commercial" in manifest["licence"]
    sources = json.loads((trained_artifact / Layout.SOURCES).read_text())
    assert [s["key"] for s in sources["sources"]] == ["ielts", "wi"]
    assert [s["texts"] for s in sources["sources"]] == [326, 363]  # the two small samples
    card = (trained_artifact / Layout.MODEL_CARD).read_text()
    assert "Write & Improve" in card and "IELTS Writing Task 2" in card
    assert "non-commercial only (inherited from: wi)" in card and manifest["version"] in card
    done = subprocess.run([*CLI, "model-card", "--model", str(trained_artifact), "--out", "/dev/stdout"],
                          capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0 and "non-commercial research and educational use only" in done.stdout


@pytest.fixture(scope="module")
def ielts_only_artifact(small_training_csv) -> Path:
    """The commercial-safe variant: IELTS alone, so no W&I text, label or gold edit (no detector)."""
    from training.fit import FitConfig, TreeConfig
    from training.train import TrainConfig, train

    cfg = TrainConfig(sources=("ielts",), data_path=str(small_training_csv), serving_encoder_variant=None,
                      fit=FitConfig(trees=TreeConfig(max_rounds=60, early_stopping_rounds=15)))
    return train(cfg, register=False)


@pytest.mark.slow  # trains, or uses the session's trained artifact
def test_training_without_the_non_commercial_source(ielts_only_artifact):
    manifest = artifacts.verify(ielts_only_artifact)
    assert manifest["sources"] == ["ielts"] and "non-commercial" not in manifest["licence"]
    assert Layout.DETECTOR not in manifest["files"]  # the detector learns from W&I's corrections
    sources = json.loads((ielts_only_artifact / Layout.SOURCES).read_text())
    assert [s["key"] for s in sources["sources"]] == ["ielts"]
    card = (ielts_only_artifact / Layout.MODEL_CARD).read_text()
    assert "Write & Improve" not in card and "non-commercial" not in card
    splits = json.loads((ielts_only_artifact / Layout.METRICS).read_text())["splits"]
    assert "wi_n" not in splits["test"] and splits["test"]["ielts_qwk"] > 0.2
    scored = EssayScorer(ielts_only_artifact).score(["Museums should be free for everyone to visit. " * 20])
    assert 3.5 <= scored[0].ielts_band <= 9
    assert np.isnan(scored[0].handcrafted[[i for i, f in enumerate(FEATURES) if f.group == "learned_errors"]]).all()


WELL_WRITTEN = (
    "Whether governments should fund the arts at the expense of other public services is a question that divides "
    "opinion sharply. In my view, although hospitals and schools must come first, a modest and carefully "
    "targeted arts budget is not a luxury but a sound investment in the life of a community.\n\n"
    "Those who oppose public funding argue, reasonably enough, that money is scarce. When waiting lists for "
    "operations grow longer and classrooms are overcrowded, subsidising theatres and galleries can look "
    "self-indulgent. Moreover, popular art forms such as film and music already thrive commercially, which "
    "suggests that audiences will pay for the culture they value without any help from the state.\n\n"
    "Nevertheless, this argument overlooks what the market fails to provide. Local museums, community orchestras "
    "and public libraries rarely make a profit, yet they offer children from poorer families experiences that "
    "would otherwise be out of reach. A teenager who discovers painting in a free workshop may gain confidence "
    "that changes the course of her education. Furthermore, cultural institutions attract tourists, support "
    "small businesses nearby and give neighbourhoods a sense of identity, so their benefits are economic as well "
    "as personal.\n\n"
    "It is also worth noting that arts spending is usually a tiny fraction of national budgets. Cutting it "
    "entirely would barely shorten a hospital queue, whereas the damage to cultural life could take decades to "
    "repair. A sensible compromise is to protect essential services first while ring-fencing a small, "
    "transparent fund for projects that serve the widest possible public.\n\n"
    "In conclusion, I believe that governments are right to prioritise health and education, but they should "
    "not abandon the arts. Properly managed, public support for culture enriches society far more than its "
    "modest cost would suggest.")


@pytest.mark.slow  # trains, or uses the session's trained artifact
def test_a_short_but_well_written_text_keeps_its_level(trained_artifact):
    """The crafted pair: a well-written essay and its first half. The level may drop by at most one CEFR step;
    the band carries the IELTS under-length rule on top, visibly."""
    scorer = EssayScorer(trained_artifact)
    words = WELL_WRITTEN.split()
    half = " ".join(words[: len(words) // 2])
    prompt = "Some people think governments should spend money on the arts. To what extent do you agree?"
    full, short = (s.scores() for s in scorer.score([WELL_WRITTEN, half], [prompt, prompt]))
    assert len(words) >= 280 and full["length_adjustment"] == 0.0
    assert CEFR_LEVELS.index(full["cefr"]) - CEFR_LEVELS.index(short["cefr"]) <= 1
    assert full["cefr"] in ("B2", "C1", "C2")  # a well-written essay is not scored as a beginner's
    assert short["length_adjustment"] < 0  # about 170 words: under the 250 IELTS Task 2 asks for
    assert short["ielts_band"] <= full["ielts_band"]


@pytest.mark.slow  # trains, or uses the session's trained artifact
def test_scorer_outputs_are_consistent(trained_artifact):
    scorer = EssayScorer(trained_artifact)
    essays = ["Technology changes how we study. " * 30, "Public transport is better than cars for cities. " * 25]
    results = scorer.score(essays, ["Is technology good for education?", None])
    for r in results:
        res = r.scores()
        assert res["ielts_band"] * 2 == int(res["ielts_band"] * 2)
        low, high = res["band_interval"]
        assert low <= res["ielts_band"] <= high
        assert abs(sum(res["cefr_probabilities"].values()) - 1) < 1e-6
        assert list(res["cefr_probabilities"]) == list(CEFR_LEVELS)
        assert r.feature_vector.shape == (len(scorer.model.feature_names),)
    assert np.isnan(results[1].handcrafted).any()  # prompt features are missing without a prompt
    # scoring is deterministic and independent of batch composition
    alone = scorer.score(essays[:1], ["Is technology good for education?"])[0]
    assert alone.ielts_raw == pytest.approx(results[0].ielts_raw, abs=1e-5)


@pytest.mark.slow  # trains, or uses the session's trained artifact
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
    assert again[0].ielts_raw == pytest.approx(first[0].ielts_raw, abs=1e-5)


@pytest.mark.slow  # trains, or uses the session's trained artifact
def test_loading_refuses_a_tampered_artifact(trained_artifact, tmp_path):
    import shutil

    copy = tmp_path / trained_artifact.name
    shutil.copytree(trained_artifact, copy)
    with open(copy / Layout.SCORING, "a") as handle:
        handle.write(" ")
    with pytest.raises(artifacts.ArtifactError, match="sha256 mismatch in scoring.json"):
        EssayScorer(copy)


@pytest.mark.slow  # trains, or uses the session's trained artifact
def test_cli_scores_a_csv_with_bad_rows_in_order(trained_artifact, shared_essays, tmp_path):
    good = shared_essays.sample(36, random_state=3)  # more than one streaming chunk (32 rows)
    rows = [
        {"essay_id": f"e{i}", "prompt": p, "essay": e} for i, (p, e) in enumerate(zip(good["prompt"], good["essay"]))
    ]
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
        assert float(row["ielts_band"]) == exp.ielts_band
        assert row["cefr"] == exp.cefr
        assert float(row["cefr_prob_C1"]) == pytest.approx(exp.cefr_probabilities["C1"], abs=1e-5)


def test_cli_reports_a_missing_model_clearly(tmp_path):
    done = subprocess.run([*CLI, "info", "--model", "essayscore:v19990101-000000"], capture_output=True, text=True)
    assert done.returncode == 2 and "no artifact" in done.stderr and "Traceback" not in done.stderr
