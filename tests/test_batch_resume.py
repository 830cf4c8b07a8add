"""The batch CLI killed midway and rerun with --resume: every input row exactly once, in order, with the values an
uninterrupted run gives. The bookkeeping (which rows of an output are complete, and whether the output belongs to
the input) is tested on its own without a model."""

import csv
import os
import signal
import subprocess
import sys

import pytest

from devtools.kill import kill_when

CLI = [sys.executable, "-m", "essayscore.cli"]


def _write_input(path, rows, fieldnames):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def _batch():
    """essayscore.batch, imported when a test runs: it imports ssl, which must not come before locust's gevent
    patching when tests/test_loadtest.py is collected (a RecursionError in SSLContext otherwise)."""
    from essayscore import batch

    return batch


def resume_point(input_path, output_path):
    return _batch().resume_point(input_path, output_path)


def _write_output(path, ids, id_column="essay_id"):
    """An output as the CLI writes it, for the given ids (values made up: the bookkeeping reads ids and errors)."""
    columns = ([id_column] if id_column else []) + _batch().RESULT_COLUMNS
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for i, essay_id in enumerate(ids):
            row = {"ielts_band": 6.5, "ielts_raw": 6.4321, "cefr": "B2", "error": "empty: 'essay' is empty" * (i == 1)}
            writer.writerow(({id_column: essay_id} if id_column else {}) | row)


@pytest.fixture
def five(tmp_path):
    path = tmp_path / "in.csv"
    _write_input(path, [{"essay_id": f"e{i}", "essay": f"Essay number {i}.\nWith a second line."} for i in range(5)],
                 ["essay_id", "essay"])
    return path


def test_a_complete_output_is_all_kept(five, tmp_path):
    out = tmp_path / "out.csv"
    _write_output(out, ["e0", "e1", "e2"])
    point = resume_point(five, out)
    assert (point.rows, point.errors, point.offset) == (3, 1, out.stat().st_size)


@pytest.mark.parametrize("cut", ["mid-field", "before the line end", "inside a quoted field"])
def test_a_last_row_cut_short_is_dropped(five, tmp_path, cut):
    out = tmp_path / "out.csv"
    _write_output(out, ["e0", "e1", "e2"])
    whole = out.read_bytes()
    complete = len(whole)
    tail = {"mid-field": b"e3,6.", "before the line end": b"e3,6.5,6.4,B2,,,,,,,,\r",
            "inside a quoted field": b'e3,6.5,6.4,B2,,,,,,,,"too_long: a message\r\nthat goes on'}[cut]
    out.write_bytes(whole + tail)
    point = resume_point(five, out)
    assert (point.rows, point.offset) == (3, complete)
    assert out.read_bytes() == whole + tail  # resume_point reads; score_csv truncates


def test_an_output_killed_before_or_at_its_header(five, tmp_path):
    out = tmp_path / "out.csv"
    assert resume_point(five, out).rows == 0  # no output yet: a fresh run
    out.write_bytes(b"")
    assert resume_point(five, out) == resume_point(five, tmp_path / "missing.csv")
    out.write_bytes(b"essay_id,ielts_ba")  # the header cut short
    assert resume_point(five, out).offset == 0
    _write_output(out, [])
    assert resume_point(five, out).rows == 0 and resume_point(five, out).offset == out.stat().st_size


@pytest.mark.parametrize("ids,problem", [
    (["e0", "e2"], "row 2 is essay_id='e2' but input row 2 is essay_id='e1'"),
    (["x0"], "row 1 is essay_id='x0'"),
    ([f"e{i}" for i in range(6)], "has only 5 rows"),
])
def test_an_output_of_another_input_is_refused(five, tmp_path, ids, problem):
    out = tmp_path / "out.csv"
    _write_output(out, ids)
    with pytest.raises(_batch().ResumeError, match=problem):
        resume_point(five, out)


def test_an_output_with_other_columns_is_refused(five, tmp_path):
    out = tmp_path / "out.csv"
    _write_output(out, ["e0"], id_column="id")  # the input's id column is essay_id
    with pytest.raises(_batch().ResumeError, match="was not written for this input"):
        resume_point(five, out)
    out.write_text("name,score\r\nalice,3\r\n")
    with pytest.raises(_batch().ResumeError, match="columns"):
        resume_point(five, out)


def test_without_an_id_column_rows_line_up_by_position(tmp_path):
    path = tmp_path / "in.csv"
    _write_input(path, [{"essay": f"Essay {i}"} for i in range(4)], ["essay"])
    out = tmp_path / "out.csv"
    _write_output(out, [None, None], id_column=None)
    assert resume_point(path, out).rows == 2
    _write_output(out, [None] * 5, id_column=None)
    with pytest.raises(_batch().ResumeError, match="has only 4 rows"):
        resume_point(path, out)


def test_cli_refuses_to_resume_an_output_of_another_input_before_loading_a_model(five, tmp_path):
    out = tmp_path / "out.csv"
    _write_output(out, ["x0"])
    before = out.read_bytes()
    done = subprocess.run([*CLI, "score", str(five), "-o", str(out), "--resume", "--model", "essayscore:v0-none"],
                          capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 2 and "not written for" in done.stderr and "Traceback" not in done.stderr
    assert out.read_bytes() == before


def _read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow  # scores ~170 essays with the session's trained model
def test_cli_killed_midway_and_resumed_gives_every_row_once(trained_artifact, shared_essays, tmp_path):
    sample = shared_essays.sample(70, random_state=11)
    rows = [{"essay_id": f"e{i}", "prompt": p, "essay": e} for i, (p, e) in enumerate(zip(sample["prompt"],
                                                                                           sample["essay"]))]
    rows[40]["essay"] = "   "  # a row with an error is kept and counted like the others
    path = tmp_path / "in.csv"
    _write_input(path, rows, ["essay_id", "prompt", "essay"])
    score = [*CLI, "score", str(path), "--model", str(trained_artifact), "-o"]
    env = os.environ.copy()

    clean = tmp_path / "clean.csv"
    done = subprocess.run([*score, str(clean)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "out.csv"
    proc = subprocess.Popen([*score, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        running = kill_when(proc, lambda: out.is_file() and resume_point(path, out).rows >= _batch().CHUNK,
                            lambda: os.kill(proc.pid, signal.SIGKILL), "its first chunk was written")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert running, "the run finished before it could be killed"
    kept = resume_point(path, out).rows
    assert _batch().CHUNK <= kept < len(rows)
    with open(out, "ab") as handle:  # as if the kill had landed inside a write
        handle.write(f"e{kept},6.".encode())

    done = subprocess.run([*score, str(out), "--resume"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert f"kept {kept} complete rows" in done.stdout
    assert f"scored {len(rows) - 1} of {len(rows)} rows" in done.stdout and "1 rows have an error" in done.stdout
    resumed, expected = _read(out), _read(clean)
    assert [r["essay_id"] for r in resumed] == [r["essay_id"] for r in rows]
    assert resumed == expected
    assert out.read_bytes() == clean.read_bytes()

    # resuming a finished output scores nothing and changes nothing
    done = subprocess.run([*score, str(out), "--resume"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and f"kept {len(rows)} complete rows" in done.stdout
    assert out.read_bytes() == clean.read_bytes()
