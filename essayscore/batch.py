"""Batch scoring of a CSV (also the backfill tool): streaming, order-preserving, one error per bad row, on any
runtime (embedded or Triton): each chunk of rows takes the service's request path (essayscore.serving).

Each chunk is written and flushed whole, so a run that is killed leaves the header and complete rows, at worst a
last row cut short. ``resume=True`` keeps the complete rows (after checking that they are the input's first rows,
in order: by the id column when there is one, else by position), drops a row cut short, and scores the rest."""

from __future__ import annotations

import csv
import io
import itertools
import os
import sys
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from essayscore.bands import CEFR_LEVELS
from essayscore.runtimes import Runtime
from essayscore.serving import Outcome, score_requests

ID_COLUMNS = ("essay_id", "id")
RESULT_COLUMNS = (["ielts_band", "ielts_raw", "cefr"] + [f"cefr_prob_{lvl}" for lvl in CEFR_LEVELS]
                  + ["length_adjustment", "error"])
CHUNK = 32  # rows scored together: bounds memory, amortises the encoder's batching


def _rows(path: Path) -> Generator[dict, None, None]:
    # surrogateescape keeps undecodable bytes visible to validation (-> a per-row "invalid UTF-8" error)
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "essay" not in reader.fieldnames:
            raise SystemExit(f"{path}: needs a header with an 'essay' column (got {reader.fieldnames})")
        yield from reader


def result_columns(outcome: Outcome) -> dict:
    """One outcome as output columns (RESULT_COLUMNS; those it lacks are empty): the CSV and the Parquet
    (essayscore.backfill) writers both use this."""
    if outcome.error is not None:
        return {"error": f"{outcome.error.code}: {outcome.error.message}"}
    r = outcome.result
    assert r is not None  # an outcome without an error was scored
    return {"ielts_band": r.ielts_band, "ielts_raw": round(r.ielts_raw, 4), "cefr": r.cefr,
            **{f"cefr_prob_{k}": round(v, 6) for k, v in r.cefr_probabilities.items()},
            "length_adjustment": round(r.length_adjustment, 4)}


def score_rows(runtime: Runtime, rows: list[dict]) -> list[dict]:
    """Input rows (``essay``, optional ``prompt``) -> their result columns, in order, through the service's
    request path."""
    requests = [{"essay": row.get("essay"), "prompt": row.get("prompt") or None} for row in rows]
    return [result_columns(o) for o in score_requests(runtime, requests).outcomes]


def _fieldnames(first: dict | None) -> list[str]:
    """The output's columns: the input's id column (the first of ID_COLUMNS it has), then the results."""
    return [c for c in ID_COLUMNS if first is not None and c in first][:1] + RESULT_COLUMNS


class ResumeError(ValueError):
    """The output cannot be resumed: it was not written for this input (or not by this command)."""


@dataclass(frozen=True)
class ResumePoint:
    rows: int  # complete rows the output holds: the input's first ``rows`` rows, in order
    errors: int  # how many of them carry an error
    offset: int  # bytes of the output holding the header and those rows (0: start afresh); the rest is cut short


def _records(handle) -> Iterator[tuple[list[str], int]]:
    """The CSV records of a binary file, each with the byte offset where it ends. A last record cut short (no line
    end, or the file ends inside a quoted field) is not yielded."""
    offset, ended = 0, True

    def lines() -> Iterator[str]:
        nonlocal offset, ended
        for raw in handle:
            offset, ended = offset + len(raw), raw.endswith(b"\n")
            yield raw.decode("utf-8", errors="surrogateescape")

    reader = csv.reader(lines(), strict=True)
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # at the end of the file: a quoted field cut short; anywhere else: not our CSV
            if handle.read(1):
                raise ResumeError(f"{handle.name}: not a CSV this command wrote ({exc}, line "
                                  f"{reader.line_num})") from exc
            return
        if not ended:  # the file ends inside this record
            return
        yield record, offset


def resume_point(input_path: Path, output_path: Path) -> ResumePoint:
    """How far ``output_path`` got: its complete rows, checked against ``input_path``'s rows in order (by the id
    column when the input has one, else by position). Raises ResumeError when the output does not belong to the
    input. Reads both files; changes neither."""
    input_path, output_path = Path(input_path), Path(output_path)
    if not output_path.is_file():
        return ResumePoint(0, 0, 0)
    rows = _rows(input_path)
    try:
        first = next(rows, None)
        fieldnames = _fieldnames(first)
        id_column = fieldnames[0] if fieldnames[0] in ID_COLUMNS else None
        inputs = itertools.chain([first] if first is not None else [], rows)
        with open(output_path, "rb") as handle:
            records = _records(handle)
            header = next(records, None)
            if header is None:  # killed before the header was written
                return ResumePoint(0, 0, 0)
            if header[0] != fieldnames:
                raise ResumeError(f"{output_path} has the columns {header[0]}, not {fieldnames} (what {input_path} "
                                  "gives): it was not written for this input; drop --resume to overwrite it")
            done, errors, offset = 0, 0, header[1]
            for record, end in records:
                row = next(inputs, None)
                where = f"{output_path} row {done + 1}"
                if len(record) != len(fieldnames):
                    raise ResumeError(f"{where} has {len(record)} fields, not {len(fieldnames)}: not a CSV this "
                                      "command wrote")
                if row is None:
                    raise ResumeError(f"{where}: {input_path} has only {done} rows; the output was not written "
                                      "for this input")
                if id_column is not None and record[0] != (row.get(id_column) or ""):
                    raise ResumeError(f"{where} is {id_column}={record[0]!r} but input row {done + 1} is "
                                      f"{id_column}={row.get(id_column)!r}: the output was not written for "
                                      f"{input_path}; drop --resume to overwrite it")
                done, errors, offset = done + 1, errors + bool(record[-1]), end
    finally:
        rows.close()
    return ResumePoint(done, errors, offset)


def _chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def score_csv(runtime: Runtime, input_path: Path, output_path: Path, progress: bool = True,
              resume: bool = False) -> dict[str, int]:
    """Score ``input_path`` into ``output_path`` (overwritten; with ``resume``, continued after its complete rows).
    Counts: ``rows`` and ``errors`` in the whole output, ``resumed`` the rows kept from an earlier run."""
    input_path, output_path = Path(input_path), Path(output_path)
    start = resume_point(input_path, output_path) if resume else ResumePoint(0, 0, 0)
    counts = {"rows": start.rows, "errors": start.errors, "resumed": start.rows}
    rows = _rows(input_path)
    first = next(rows, None)
    fieldnames = _fieldnames(first)
    passthrough = fieldnames[: len(fieldnames) - len(RESULT_COLUMNS)]
    todo = itertools.islice(itertools.chain([first] if first is not None else [], rows), start.rows, None)
    if start.offset:
        os.truncate(output_path, start.offset)  # drops a row cut short by the kill
    # surrogateescape: an id with undecodable bytes goes back out as the same bytes (and reads back equal)
    with open(output_path, "a" if start.offset else "w", newline="", encoding="utf-8",
              errors="surrogateescape") as handle:
        if not start.offset:
            csv.DictWriter(handle, fieldnames=fieldnames).writeheader()
            handle.flush()
        bar = tqdm(desc="scoring", unit="essay", disable=not progress, initial=start.rows)
        for chunk in _chunks(todo, CHUNK):
            _flush(runtime, chunk, handle, fieldnames, passthrough, counts, bar)
        bar.close()
    return counts


def _flush(runtime, chunk, handle, fieldnames, passthrough, counts, bar) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fieldnames)
    for row, result in zip(chunk, score_rows(runtime, chunk)):
        writer.writerow({c: row.get(c, "") for c in passthrough} | result)
        counts["rows"] += 1
        counts["errors"] += "error" in result
    handle.write(text.getvalue())  # the chunk's rows in one write, on disk before the next chunk is scored
    handle.flush()
    bar.update(len(chunk))
