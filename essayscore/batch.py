"""Batch scoring of a CSV (also the backfill tool): streaming, order-preserving, one error per bad row."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from essayscore.bands import CEFR_LEVELS
from essayscore.pipeline import EssayScorer
from essayscore.validation import InputError, check_essay

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


def _score_chunk(scorer: EssayScorer, chunk: list[dict]) -> list[dict]:
    out: list[dict] = [{} for _ in chunk]
    valid = []
    for i, row in enumerate(chunk):
        try:
            essay, prompt = check_essay(row.get("essay"), row.get("prompt") or None)
            valid.append((i, essay, prompt))
        except InputError as exc:
            out[i]["error"] = f"{exc.code}: {exc.message}"
    if valid:
        scored = scorer.score_isolated([e for _, e, _ in valid], [p for _, _, p in valid])
        for (i, _, _), result in zip(valid, scored):
            if isinstance(result, Exception):
                out[i]["error"] = f"scoring_failed: {type(result).__name__}: {result}"
                continue
            r = result.result
            out[i] |= {"ielts_band": r["ielts_band"], "ielts_raw": round(r["ielts_raw"], 4), "cefr": r["cefr"],
                       **{f"cefr_prob_{k}": round(v, 6) for k, v in r["cefr_probabilities"].items()},
                       "length_adjustment": round(r["length_adjustment"], 4)}
    return out


def score_csv(scorer: EssayScorer, input_path: Path, output_path: Path, progress: bool = True) -> dict[str, int]:
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
                _flush(scorer, chunk, writer, passthrough, counts, bar)
                chunk = []
        if chunk:
            _flush(scorer, chunk, writer, passthrough, counts, bar)
        bar.close()
    return counts


def _flush(scorer, chunk, writer, passthrough, counts, bar) -> None:
    for row, result in zip(chunk, _score_chunk(scorer, chunk)):
        writer.writerow({c: row.get(c, "") for c in passthrough} | result)
        counts["rows"] += 1
        counts["errors"] += "error" in result
    bar.update(len(chunk))
