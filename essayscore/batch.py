"""Batch scoring of a CSV (also the backfill tool): streaming, order-preserving, one error per bad row, on any
runtime (embedded or Triton): each chunk of rows takes the service's request path (essayscore.serving)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from essayscore.bands import CEFR_LEVELS
from essayscore.runtimes import Runtime
from essayscore.serving import Outcome, score_requests

ID_COLUMNS = ("essay_id", "id")
RESULT_COLUMNS = (["ielts_band", "ielts_raw", "cefr"] + [f"cefr_prob_{lvl}" for lvl in CEFR_LEVELS]
                  + ["length_adjustment", "error"])
CHUNK = 32  # rows scored together: bounds memory, amortises the encoder's batching


def _rows(path: Path) -> Iterator[dict]:
    # surrogateescape keeps undecodable bytes visible to validation (-> a per-row "invalid UTF-8" error)
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "essay" not in reader.fieldnames:
            raise SystemExit(f"{path}: needs a header with an 'essay' column (got {reader.fieldnames})")
        yield from reader


def _columns(outcome: Outcome) -> dict:
    if outcome.error is not None:
        return {"error": f"{outcome.error.code}: {outcome.error.message}"}
    r = outcome.result
    assert r is not None  # an outcome without an error was scored
    return {"ielts_band": r.ielts_band, "ielts_raw": round(r.ielts_raw, 4), "cefr": r.cefr,
            **{f"cefr_prob_{k}": round(v, 6) for k, v in r.cefr_probabilities.items()},
            "length_adjustment": round(r.length_adjustment, 4)}


def _score_chunk(runtime: Runtime, chunk: list[dict]) -> list[dict]:
    requests = [{"essay": row.get("essay"), "prompt": row.get("prompt") or None} for row in chunk]
    return [_columns(o) for o in score_requests(runtime, requests).outcomes]


def score_csv(runtime: Runtime, input_path: Path, output_path: Path, progress: bool = True) -> dict[str, int]:
    counts = {"rows": 0, "errors": 0}
    rows = _rows(Path(input_path))
    first = next(rows, None)
    passthrough = [c for c in ID_COLUMNS if first is not None and c in first][:1]
    with open(output_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=passthrough + RESULT_COLUMNS)
        writer.writeheader()
        bar = tqdm(desc="scoring", unit="essay", disable=not progress)
        chunk: list[dict] = [first] if first is not None else []
        for row in rows:
            chunk.append(row)
            if len(chunk) == CHUNK:
                _flush(runtime, chunk, writer, passthrough, counts, bar)
                chunk = []
        if chunk:
            _flush(runtime, chunk, writer, passthrough, counts, bar)
        bar.close()
    return counts


def _flush(runtime, chunk, writer, passthrough, counts, bar) -> None:
    for row, result in zip(chunk, _score_chunk(runtime, chunk)):
        writer.writerow({c: row.get(c, "") for c in passthrough} | result)
        counts["rows"] += 1
        counts["errors"] += "error" in result
    bar.update(len(chunk))
