import pandas as pd

from training.data import load_csv, load_hub, prepare

ESSAY = "Technology has changed how people learn. " * 20


def test_shared_csv_loads_every_row_with_cefr_and_original_band(shared_essays):
    assert len(shared_essays) == 1628
    counts = shared_essays["band_label"].value_counts()
    assert counts["<4"] == 60 and counts["7"] == 246  # the README's band counts
    censored = shared_essays[shared_essays["band_censored"]]
    assert (censored["band"] == 3.5).all() and (censored["cefr"] == "A1").all()
    assert shared_essays["essay_id"].is_unique
    assert set(shared_essays["cefr"]) == {"A1", "A2", "B1", "B2", "C1", "C2"}


def test_bad_rows_are_reported_with_reasons_not_dropped_silently(tmp_path):
    frame = pd.DataFrame({
        "prompt": ["p1", "p2", "p3", "p4", "p5", "p1"],
        "essay": [ESSAY, "   ", ESSAY + "x", "12345 !!!", ESSAY + "y", ESSAY],
        "band": ["6.5", "7", "six", "5", " 8 ", "6.5"],
    })
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    loaded = load_csv(path)
    assert list(loaded.essays["band"]) == [6.5, 8.0]
    reasons = dict(zip(loaded.rejected["row"], loaded.rejected["reason"]))
    assert reasons == {1: "empty essay", 2: "unparsable band", 3: "empty essay", 5: "duplicate essay"}
    assert "4 rejected" in loaded.summary() and "unparsable band" in loaded.summary()


def test_hub_loader_reads_the_hub_layout_from_a_local_folder(tmp_path):
    """The hub dataset has prompt, essay, evaluation (LLM text, not a label) and band with stray whitespace.
    `datasets.load_dataset` treats a local folder in the hub's layout exactly like the hub repo id."""
    data_dir = tmp_path / "IELTS-writing-task-2-evaluation" / "data"
    data_dir.mkdir(parents=True)
    pd.DataFrame({
        "prompt": ["Some people think...", "Others believe..."],
        "essay": [ESSAY, ESSAY + " More."],
        "evaluation": ["LLM feedback", "LLM feedback"],
        "band": ["6.5 ", "\n<4"],
    }).to_parquet(data_dir / "train-00000-of-00001.parquet")
    loaded = load_hub(str(data_dir.parent), split="train")
    assert list(loaded.essays["band"]) == [6.5, 3.5]
    assert list(loaded.essays["band_censored"]) == [False, True]
    assert list(loaded.essays["cefr"]) == ["B2", "A1"]
    assert "evaluation" not in loaded.essays and set(loaded.essays["origin"]) == {"hub-train"}


def test_prepare_keeps_ids_stable_across_row_order():
    frame = pd.DataFrame({"prompt": ["a", "b"], "essay": [ESSAY, ESSAY + " z"], "band": ["5", "6"]})
    ids = prepare(frame).essays.set_index("band")["essay_id"]
    ids_reversed = prepare(frame.iloc[::-1]).essays.set_index("band")["essay_id"]
    assert ids.to_dict() == ids_reversed.to_dict()
