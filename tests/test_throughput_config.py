"""What the two-core throughput work (issue 13) ships must leave the scores as they were and use both workers.

* The encoder overlapped with the features on a thread of its own gives the very same results as the two stages one
  after the other (band, raw score, interval, CEFR probabilities, the model's input row, the handcrafted values and
  the grammar matches: what SHAP, warnings and issues are made from).
* A normal client, one pooled keep-alive client of 8 connections used by 8 threads, gets answers from both Bento
  workers of the default configuration: the request guard answers ``Connection: close`` while its worker is busy,
  so the next request reconnects to whichever worker accepts first. Which worker scored an essay is read from the
  service's own request log (one file per worker process).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _comparable(result) -> dict:
    """Every field of an EssayResult as plain values (NaN written as a string, so that equal means equal)."""
    return {**result.scores(), "feature_vector": [repr(float(v)) for v in result.feature_vector],
            "handcrafted": [repr(float(v)) for v in result.handcrafted], "matches": [repr(m) for m in result.matches]}


def test_the_overlapped_encoder_gives_the_same_scores(trained_artifact, shared_essays):
    from essayscore.essay_scorer import EssayScorer

    rows = shared_essays.sample(n=6, random_state=13)
    essays, prompts = list(rows["essay"]), [p if i % 2 else None for i, p in enumerate(rows["prompt"])]
    sequential = EssayScorer(trained_artifact, overlap_encoder=False)
    overlapped = EssayScorer(trained_artifact, overlap_encoder=True)
    assert sequential._overlap is None and overlapped._overlap is not None
    for essay, prompt in zip(essays, prompts):  # one at a time, as the service scores them
        timings: dict[str, float] = {}
        (a,), (b,) = sequential.score([essay], [prompt]), overlapped.score([essay], [prompt], timings)
        assert _comparable(a) == _comparable(b)
        assert {"features_ms", "tokenise_ms", "encoder_ms", "trees_ms"} <= set(timings)
    together_a = sequential.score(essays, prompts)  # and as the batch CLI does
    together_b = overlapped.score(essays, prompts)
    assert [_comparable(r) for r in together_a] == [_comparable(r) for r in together_b]


def test_an_error_in_the_features_leaves_no_encoder_running(trained_artifact):
    from essayscore.essay_scorer import EssayScorer

    scorer = EssayScorer(trained_artifact, overlap_encoder=True)
    started, finished = threading.Event(), threading.Event()
    real_embed = scorer.embed

    def slow_embed(*args):
        started.set()
        try:
            return real_embed(*args)
        finally:
            finished.set()

    def broken_features(*args):
        started.wait(30)
        raise RuntimeError("features broke")

    scorer.embed, scorer.features = slow_embed, broken_features
    with pytest.raises(RuntimeError, match="features broke"):
        scorer.score(["An essay about museums. " * 30])
    assert started.is_set() and finished.is_set()  # the error came only once the encoder was done


def _rows_per_worker(log_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    from essayscore.monitoring import LOG_PATTERN

    for path in log_dir.glob(LOG_PATTERN):
        pid = path.name.split("-")[-2]  # requests-<day>-<host>-<pid>-<seq>.jsonl
        counts[pid] = counts.get(pid, 0) + len(path.read_text().splitlines())
    return counts


def test_a_pooled_keep_alive_client_is_served_by_both_workers(trained_artifact, shared_essays, tmp_path):
    httpx = pytest.importorskip("httpx")
    from devtools.servers import BentoServer

    rows = shared_essays.sample(n=64, random_state=7)
    log_dir = tmp_path / "monitor"
    # the shipped defaults (release_busy_connections on), two workers
    with BentoServer(trained_artifact, ESSAYSCORE_RUNTIME="embedded", ESSAYSCORE_WORKERS="2",
                     ESSAYSCORE_RELEASE_BUSY_CONNECTIONS=None, ESSAYSCORE_MONITOR_LOG_DIR=str(log_dir)) as bento:
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        with httpx.Client(base_url=bento.url, timeout=300, limits=limits) as client:
            def score(row) -> int:
                return client.post("/score", json={"essay": row.essay, "prompt": row.prompt}).status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(score, rows.itertuples()))
    assert statuses == [200] * len(rows)
    served = _rows_per_worker(log_dir)
    print(f"essays scored per worker: {served}")
    assert sum(served.values()) == len(rows)
    assert len(served) == 2, f"one worker served everything: {served}"
    assert min(served.values()) >= len(rows) // 8, f"one worker was nearly idle: {served}"
