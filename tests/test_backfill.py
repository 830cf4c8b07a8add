"""``essayscore backfill`` on a real local Ray cluster with the session's trained model: the Parquet shards hold what
the batch CLI gives for the same rows, bad rows get its errors, every row carries the model version, a rerun
skips complete shards, and a run killed midway (SIGKILL to the whole job) and rerun yields every row exactly once.
The shard bookkeeping (plan, byte ranges, checksums, stale files) is tested without Ray or a model.

Every Ray driver here is a real ``essayscore backfill`` subprocess: the pytest process never imports ray (locust's
gevent patching, applied when tests/test_loadtest.py is collected, must not meet Ray's threads). The module's
cluster is a real ``ray start --head``; one run starts its own local cluster instead (no --ray-address)."""

from __future__ import annotations

import csv
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from devtools.kill import kill_when

CLI = [sys.executable, "-m", "essayscore.cli"]
RAY = str(Path(sys.executable).with_name("ray"))
# a token-authenticated cluster, as Ray starts them; a driver that names an address must say so (RAY_AUTH_MODE)
ENV = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
TOO_LONG = "word " * 4_001  # 20,005 characters: over ESSAYSCORE_MAX_ESSAY_CHARS
BAD = {"empty": "   ", "no_letters": "1234 5678 !!!", "too_long": TOO_LONG}


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["essay_id", "prompt", "essay"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _read_output(out: Path) -> list[dict]:
    """Every row of every shard under ``out``, with the folder it came from."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(out.rglob("part-*.parquet")):
        rows += [r | {"folder": path.parent.relative_to(out).as_posix()} for r in pq.read_table(path).to_pylist()]
    return rows


def _backfill(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "backfill", *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


# --- bookkeeping, no Ray, no model -----------------------------------------------------------------------------
def _backfill_module():
    from essayscore import backfill

    return backfill


def test_csv_shards_read_back_the_rows_the_batch_cli_reads(tmp_path):
    from essayscore.batch import _rows

    backfill = _backfill_module()
    path = tmp_path / "in.csv"
    # quoted newlines (CRLF and LF), blank lines, an undecodable byte, an extra field: what csv.DictReader sees
    path.write_bytes(b'essay_id,prompt,essay\r\na,,"one\r\ntwo"\r\n\r\nb,p,"x\ny"\r\nc,,caf\xe9\r\n'
                     b'd,,plain\r\ne,,"q ""quoted"""\r\nf,,extra,field\r\ng,,last without a line end')
    expected = list(_rows(path))
    shards = backfill.plan(path, tmp_path / "out", "v1", shard_rows=3)
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6), (6, 7)]
    assert [r for s in shards for r in backfill.read_shard(s)] == expected
    assert len({s.sha256 for s in shards}) == 3
    assert shards[0].path == str(tmp_path / "out" / "in.csv" / "part-00000.v1.parquet")

    again = backfill.plan(path, tmp_path / "out", "v1", shard_rows=3)
    assert again == shards  # deterministic: the rerun finds the same shards
    path.write_bytes(path.read_bytes().replace(b"plain", b"plane"))  # one row of the second shard changes
    changed = backfill.plan(path, tmp_path / "out", "v1", shard_rows=3)
    assert [a.sha256 == b.sha256 for a, b in zip(shards, changed)] == [True, False, True]
    with pytest.raises(backfill.BackfillError, match="changed since"):
        backfill.read_shard(shards[1])  # planned before the change


def test_parquet_shards_and_folders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    backfill = _backfill_module()
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rows = [{"id": i, "essay": f"essay {i}" if i != 3 else None, "other": i} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "sub" / "b.parquet", row_group_size=4)
    _write_csv(folder / "a.csv", [{"essay_id": "x", "prompt": "", "essay": "text"}])
    (folder / "notes.txt").write_text("not an input")
    out = folder / "out"  # an output folder inside the input folder is never read as input
    out.mkdir()
    pq.write_table(pa.Table.from_pylist([{"essay": "an output"}]), out / "part-00000.v1.parquet")

    shards = backfill.plan(folder, out, "v1", shard_rows=3)
    assert [(Path(s.source).name, s.start, s.stop) for s in shards] == \
        [("a.csv", 0, 1), ("b.parquet", 0, 3), ("b.parquet", 3, 6), ("b.parquet", 6, 9), ("b.parquet", 9, 10)]
    assert shards[1].path == str(out / "sub" / "b.parquet" / "part-00000.v1.parquet")
    assert shards[1].columns == ("id", "essay")  # only what scoring and the checksum read
    read = [r for s in shards[1:] for r in backfill.read_shard(s)]  # across row-group boundaries
    assert read == [{"id": r["id"], "essay": r["essay"]} for r in rows]

    pq.write_table(pa.Table.from_pylist([{"text": "x"}]), folder / "c.parquet")
    with pytest.raises(backfill.BackfillError, match="'essay' column"):
        backfill.plan(folder, out, "v1", shard_rows=3)


def test_stale_pending_files_and_unplanned_parts_are_removed(tmp_path):
    backfill = _backfill_module()
    path = _write_csv(tmp_path / "in.csv", [{"essay_id": str(i), "prompt": "", "essay": "x"} for i in range(4)])
    out = tmp_path / "out"
    shards = backfill.plan(path, out, "v1", shard_rows=2)
    folder = out / "in.csv"
    folder.mkdir(parents=True)
    keep = [Path(s.path) for s in shards] + [folder / "part-00005.v0.parquet"]  # another model version's part
    keep.append(out / "manifest.v1.json")  # the run manifest itself
    stale = [folder / "part-00000.v1.parquet.1a2b3c4d.pending", folder / "part-00002.v1.parquet",
             out / "manifest.v1.json.5e6f7a8b.pending"]  # a run manifest cut short by the kill
    for p in keep + stale:
        p.write_bytes(b"x")
    assert sorted(backfill.remove_stale(shards, out, path, "v1")) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    assert backfill.is_complete(shards[0], "v1") is None  # a file that is not a shard this command wrote


# --- on a Ray cluster, with the trained model ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address():
    """A real one-node Ray cluster (2 CPUs, small object store, no dashboard, no usage reports) for the module;
    stopped with its whole process group at the end."""
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = _free_port()
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", f"--object-store-memory={256 << 20}",
                             f"--temp-dir={temp}", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([RAY, "status", f"--address={address}"], capture_output=True, env=ENV).returncode:
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(1)
        yield address
    finally:
        _stop_session(head)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_session(proc: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL to the process group ``proc`` leads, then to whatever of its session is left (Ray's
    agents and workers, some in their own groups)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        break
    _kill_session_stragglers(proc.pid)


def _session_pids(sid: int) -> list[int]:
    ps = subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True).stdout
    return [int(p) for p in ps.split()]


def _kill_session_stragglers(sid: int, grace_s: float = 5) -> None:
    deadline = time.monotonic() + grace_s
    while _session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def inputs(shared_essays, tmp_path_factory) -> dict:
    """40 rows (37 real essays, 3 bad) as one CSV, and the same rows as a folder (a CSV and a Parquet file) with
    Parquet-only bad rows: a null essay, and a file whose essay column holds integers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sample = shared_essays.sample(37, random_state=7)
    rows = [{"essay_id": f"e{i:02d}", "prompt": p if i % 2 else "", "essay": e}
            for i, (p, e) in enumerate(zip(sample["prompt"], sample["essay"]))]
    for i, (code, essay) in enumerate(BAD.items()):
        rows.insert(5 + 11 * i, {"essay_id": code, "prompt": "", "essay": essay})
    root = tmp_path_factory.mktemp("backfill-inputs")
    folder = root / "folder"
    (folder / "sub").mkdir(parents=True)
    _write_csv(folder / "a.csv", rows[:24])
    pq.write_table(pa.Table.from_pylist(rows[24:] + [{"essay_id": "null", "prompt": None, "essay": None}]),
                   folder / "b.parquet", row_group_size=5)
    pq.write_table(pa.Table.from_pylist([{"essay_id": f"int{i}", "essay": i} for i in range(2)]),
                   folder / "sub" / "c.parquet")
    return {"rows": rows, "csv": _write_csv(root / "all.csv", rows), "folder": folder}


@pytest.fixture(scope="module")
def batch_reference(trained_artifact, inputs, tmp_path_factory) -> dict[str, dict]:
    """``essayscore score`` on the same rows: essay_id -> its output row."""
    out = tmp_path_factory.mktemp("backfill-batch") / "scored.csv"
    done = subprocess.run([*CLI, "score", str(inputs["csv"]), "-o", str(out), "--model", str(trained_artifact)],
                          capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    return {r["essay_id"]: r for r in _read_csv(out)}


@pytest.fixture(scope="module")
def folder_run(trained_artifact, inputs, ray_address, tmp_path_factory) -> dict:
    """The folder backfilled on the module's cluster by 2 actors, in shards of 8 rows."""
    out = tmp_path_factory.mktemp("backfill-out")
    done = _backfill(inputs["folder"], "--out", out, "--model", trained_artifact, "--ray-address", ray_address,
                     "--actors", 2, "--shard-rows", 8)
    assert done.returncode == 0, done.stderr
    return {"out": out, "stdout": done.stdout, "rows": _read_output(out)}


def _version(artifact: Path) -> str:
    return json.loads((artifact / "manifest.json").read_text())["version"]


def _same_as_batch(row: dict, reference: dict) -> list[str]:
    """The columns where a backfill row differs from the batch CLI's (CSV text) row."""
    from essayscore.batch import RESULT_COLUMNS

    differ = []
    for column in RESULT_COLUMNS:
        ours, theirs = row[column], reference[column]
        if column in ("cefr", "error"):
            same = (ours or "") == theirs
        else:
            same = (theirs == "" and ours is None) or (ours is not None and math.isclose(ours, float(theirs),
                                                                                       abs_tol=1e-9))
        if not same:
            differ.append(f"{column}: {ours!r} != {theirs!r}")
    return differ


@pytest.mark.slow
def test_backfill_equals_the_batch_cli(folder_run, batch_reference, inputs):
    rows = folder_run["rows"]
    by_id = {r["essay_id"]: r for r in rows}
    assert len(by_id) == len(rows) == len(inputs["rows"]) + 3  # + the null and the two integer essays
    assert {r["folder"] for r in rows} == {"a.csv", "b.parquet", "sub/c.parquet"}
    differ = {i: d for i, ref in batch_reference.items() if (d := _same_as_batch(by_id[i], ref))}
    assert not differ, differ
    scored = [r for r in rows if r["error"] is None]
    assert len(scored) == 37 and len({r["ielts_raw"] for r in scored}) > 10  # real, varied scores
    assert [r["row"] for r in rows if r["folder"] == "a.csv"] == list(range(24))


@pytest.mark.slow
def test_bad_rows_get_errors_not_a_crash(folder_run, batch_reference):
    by_id = {r["essay_id"]: r for r in folder_run["rows"]}
    for code in BAD:
        assert by_id[code]["error"].startswith(f"{code}: ") and by_id[code]["error"] == batch_reference[code]["error"]
    for essay_id in ("null", "int0", "int1"):  # what only Parquet can hold: no string at all
        assert by_id[essay_id]["error"].startswith("wrong_type: 'essay'"), by_id[essay_id]
    for essay_id in [*BAD, "null", "int0", "int1"]:
        assert by_id[essay_id]["ielts_band"] is None and by_id[essay_id]["cefr"] is None
    assert "43 rows (6 with an error)" in folder_run["stdout"]


@pytest.mark.slow
def test_output_carries_the_model_version(folder_run, trained_artifact):
    import pyarrow.parquet as pq

    version = _version(trained_artifact)
    assert {r["model_version"] for r in folder_run["rows"]} == {version}
    files = sorted(f for f in folder_run["out"].rglob("*") if f.is_file() and f.suffix == ".parquet")
    assert len(files) == 7 and all(f.name.endswith(f".{version}.parquet") for f in files)  # 3 + 3 + 1 shards
    assert not list(folder_run["out"].rglob("*.pending"))
    manifest = json.loads((folder_run["out"] / f"manifest.{version}.json").read_text())
    assert manifest["model_version"] == version and manifest["complete"] and manifest["rows"] == 43
    for f in files:  # each shard's own manifest, in its Parquet metadata
        meta = json.loads(pq.read_metadata(f).metadata[b"essayscore.backfill"])
        assert meta["model_version"] == version and meta["rows"] == pq.read_metadata(f).num_rows
    # one CPU and one encoder thread per actor
    assert {s["encoder_threads"] for s in manifest["shards"]} == {1}
    assert 1 <= len({s["pid"] for s in manifest["shards"]}) <= 2


@pytest.mark.slow
def test_a_rerun_skips_complete_shards(folder_run, inputs, trained_artifact):
    files = {f: f.read_bytes() for f in folder_run["out"].rglob("part-*.parquet")}
    done = _backfill(inputs["folder"], "--out", folder_run["out"], "--model", trained_artifact, "--shard-rows", 8)
    assert done.returncode == 0, done.stderr
    assert f"scored 0 shards, skipped {len(files)} already complete" in done.stdout
    assert {f: f.read_bytes() for f in folder_run["out"].rglob("part-*.parquet")} == files


@pytest.mark.slow
def test_killed_midway_and_rerun_gives_every_row_once(trained_artifact, inputs, batch_reference, ray_address,
                                                      tmp_path):
    out = tmp_path / "out"
    shards = out / "all.csv"
    # no --ray-address: the job starts its own local cluster, and the whole job (driver, cluster, actor) is killed
    job = subprocess.Popen([*CLI, "backfill", str(inputs["csv"]), "--out", str(out), "--model", str(trained_artifact),
                            "--shard-rows", "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                           start_new_session=True)
    try:
        running = kill_when(job, lambda: len(list(shards.glob("*.parquet"))) >= 2,
                            lambda: os.killpg(job.pid, signal.SIGKILL), "two shards were complete")
    finally:
        _stop_session(job)
    assert running, "the job finished before it could be killed"
    complete = sorted(shards.glob("*.parquet"))
    assert 2 <= len(complete) < 8
    version = _version(trained_artifact)
    (shards / f"part-00007.{version}.parquet.deadbeef.pending").write_bytes(b"PAR1 cut short")  # a write cut short

    done = _backfill(inputs["csv"], "--out", out, "--model", trained_artifact, "--ray-address", ray_address,
                     "--shard-rows", 5)  # the rerun joins a running cluster
    assert done.returncode == 0, done.stderr
    assert f"skipped {len(complete)} already complete" in done.stdout
    assert f"scored {8 - len(complete)} shards" in done.stdout
    rows = _read_output(out)
    assert sorted(r["row"] for r in rows) == list(range(40))  # every row exactly once
    assert [r["essay_id"] for r in sorted(rows, key=lambda r: r["row"])] == [r["essay_id"] for r in inputs["rows"]]
    differ = {r["essay_id"]: d for r in rows if (d := _same_as_batch(r, batch_reference[r["essay_id"]]))}
    assert not differ, differ
    assert not list(out.rglob("*.pending"))
    manifest = json.loads((out / f"manifest.{version}.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 40 and manifest["errors"] == 3
    assert all(s["done"] and s["pid"] and s["encoder_threads"] == 1 for s in manifest["shards"])  # kept ones too
