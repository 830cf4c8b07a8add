"""Backfill at scale on Ray Data: ``essayscore backfill INPUT --out DIR`` scores a CSV or Parquet file (or a folder
of them) into Parquet shards, with the service's request path (``essayscore.batch.score_rows``) in Ray actors that
load the model once. Design, resume semantics and running on a real cluster: docs/backfill.md.

* **Plan** (driver, streaming, no model): every input file is cut into shards of ``shard_rows`` rows; each shard
  gets the sha256 of its rows (id, prompt, essay) and, for a CSV, the byte range of its records.
* **Score** (actors): the dataset holds one small descriptor per shard still to do; ``map_batches`` with a class
  (one CPU, one thread per actor) reads the shard's rows, scores them, writes
  ``part-XXXXX.<model version>.parquet.<unique>.pending`` and renames it to the final name. The final file is the
  commit: its Parquet metadata is the shard's manifest (rows, input checksum, model version).
* **Resume**: a shard whose final file exists with the same checksum, range and model version is skipped; stale
  pending files and parts of this version the plan no longer has are deleted. So a run killed at any moment and
  rerun yields every input row exactly once. ``manifest.<model version>.json`` sums the run up (rewritten
  atomically after every shard).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from essayscore.batch import CHUNK, ID_COLUMNS, RESULT_COLUMNS, score_rows

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet"}
METADATA_KEY = b"essayscore.backfill"  # the shard's manifest, inside its Parquet file
# what an actor's environment gets from the driver's, so it loads and scores as the driver's settings say
FORWARDED_ENV = ("ESSAYSCORE_", "HF_", "TRANSFORMERS_", "BENTOML_HOME")
# one CPU per actor, one thread per actor: N actors on N cores never oversubscribe them
ACTOR_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ESSAYSCORE_ENCODER_THREADS": "1",
             "TOKENIZERS_PARALLELISM": "false"}


class BackfillError(ValueError):
    """The input or the request cannot be backfilled (no 'essay' column, unknown format, too many actors)."""


@dataclass(frozen=True)
class Shard:
    source: str  # the input file (absolute)
    fmt: str  # "csv" or "parquet"
    index: int
    start: int  # rows [start, stop) of the input file (0-based, header not counted)
    stop: int
    sha256: str  # of the rows' id, prompt and essay values (format-independent)
    path: str  # the final output file
    columns: tuple[str, ...]  # CSV: the header's fieldnames; Parquet: the columns read
    byte_start: int = -1  # CSV only: the bytes holding exactly these records
    byte_stop: int = -1

    @classmethod
    def from_json(cls, text: str) -> Shard:
        fields = json.loads(text)
        return cls(**fields | {"columns": tuple(fields["columns"])})

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def id_column(self) -> str | None:
        return next((c for c in ID_COLUMNS if c in self.columns), None)


@dataclass
class Report:
    model_version: str
    shards: list[dict] = field(default_factory=list)  # one entry per planned shard (the manifest's)
    scored: int = 0  # shards scored by this run
    skipped: int = 0  # shards already complete
    manifest: Path = Path("manifest.json")

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.shards)

    @property
    def errors(self) -> int:
        return sum(s.get("errors") or 0 for s in self.shards)


# --- reading ---------------------------------------------------------------------------------------------------
def input_files(input_path: Path, out_dir: Path | None = None) -> list[Path]:
    """The CSV and Parquet files to score: ``input_path`` itself, or those under the folder (sorted), never one
    under ``out_dir`` (an output folder inside the input folder)."""
    if input_path.is_file():
        if input_path.suffix.lower() not in FORMATS:
            raise BackfillError(f"{input_path}: not a .csv or .parquet file")
        return [input_path]
    if not input_path.is_dir():
        raise FileNotFoundError(f"{input_path}: no such file or folder")
    skip = out_dir.resolve() if out_dir is not None else None
    files = sorted(p for p in input_path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS
                   and not (skip is not None and p.resolve().is_relative_to(skip)))
    if not files:
        raise BackfillError(f"{input_path}: holds no .csv or .parquet file")
    return files


def _csv_columns(path: Path) -> tuple[str, ...]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        fieldnames = list(csv.DictReader(handle).fieldnames or [])
    if "essay" not in fieldnames:
        raise BackfillError(f"{path}: needs a header with an 'essay' column (got {fieldnames or None})")
    return tuple(fieldnames)


def _csv_rows(path: Path) -> Iterator[tuple[dict, int, int]]:
    """The rows of a CSV as ``essayscore score`` reads them (DictReader, surrogateescape), each with the byte range
    of its record (a blank line before it included)."""
    csv.field_size_limit(sys.maxsize)
    with open(path, "rb") as handle:
        offset = 0

        def lines() -> Iterator[str]:
            nonlocal offset
            for raw in handle:
                offset += len(raw)
                yield raw.decode("utf-8", errors="surrogateescape")

        reader = csv.DictReader(lines())
        reader.fieldnames  # noqa: B018 - reads the header, so that offset is where the records start
        start = offset
        for row in reader:  # the reader pulls exactly the lines of one record (blank lines skipped)
            yield row, start, offset
            start = offset


def _parquet_columns(path: Path) -> tuple[str, ...]:
    import pyarrow.parquet as pq

    names = pq.ParquetFile(path).schema_arrow.names
    if "essay" not in names:
        raise BackfillError(f"{path}: needs an 'essay' column (got {names})")
    return tuple(c for c in (*ID_COLUMNS, "prompt", "essay") if c in names)


def _parquet_stream(path: Path, columns: tuple[str, ...]) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=list(columns)):
        yield from batch.to_pylist()


def _parquet_rows(path: Path, columns: tuple[str, ...], start: int = 0, stop: int | None = None) -> list[dict]:
    """Rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    stop = parquet.metadata.num_rows if stop is None else stop
    groups, first, seen = [], None, 0
    for g in range(parquet.metadata.num_row_groups):
        n = parquet.metadata.row_group(g).num_rows
        if seen < stop and seen + n > start:
            groups.append(g)
            first = seen if first is None else first
        seen += n
    if not groups:
        return []
    table = parquet.read_row_groups(groups, columns=list(columns))
    assert first is not None
    return pa.Table.slice(table, start - first, stop - start).to_pylist()


def _rows_sha256(rows: list[dict], columns: tuple[str, ...]) -> str:
    keys = [c for c in (*ID_COLUMNS, "prompt", "essay") if c in columns]
    digest = hashlib.sha256()
    for row in rows:  # JSON escapes lone surrogates (undecodable CSV bytes) and tells None from ""
        digest.update(json.dumps([row.get(k) for k in keys], default=repr).encode() + b"\n")
    return digest.hexdigest()


def read_shard(shard: Shard) -> list[dict]:
    """A shard's input rows, read the way the planner read them; refuses a file that changed since."""
    if shard.fmt == "csv":
        with open(shard.source, "rb") as handle:
            handle.seek(shard.byte_start)
            text = handle.read(shard.byte_stop - shard.byte_start).decode("utf-8", errors="surrogateescape")
        csv.field_size_limit(sys.maxsize)
        rows = list(csv.DictReader(io.StringIO(text, newline=""), fieldnames=list(shard.columns)))
    else:
        rows = _parquet_rows(Path(shard.source), shard.columns, shard.start, shard.stop)
    if len(rows) != shard.rows or _rows_sha256(rows, shard.columns) != shard.sha256:
        raise BackfillError(f"{shard.source} changed since the backfill was planned (shard {shard.index}); rerun")
    return rows


# --- planning --------------------------------------------------------------------------------------------------
def output_folder(out_dir: Path, input_path: Path, source: Path) -> Path:
    """Each input file's shards go to a folder named after its path under INPUT (its name for a single file)."""
    relative = source.name if input_path.is_file() else source.relative_to(input_path).as_posix()
    return out_dir / relative


def part_name(index: int, version: str) -> str:
    return f"part-{index:05d}.{version}.parquet"


def _batched(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def plan(input_path: Path, out_dir: Path, version: str, shard_rows: int) -> list[Shard]:
    """Every input file cut into shards of ``shard_rows`` rows (streamed: memory holds one shard)."""
    if shard_rows < 1:
        raise BackfillError("shard_rows must be at least 1")
    shards = []
    for source in input_files(input_path, out_dir):
        folder = output_folder(out_dir, input_path, source)
        fmt = FORMATS[source.suffix.lower()]
        if fmt == "csv":
            columns, rows = _csv_columns(source), _csv_rows(source)
        else:
            columns = _parquet_columns(source)
            rows = ((row, -1, -1) for row in _parquet_stream(source, columns))
        start = 0
        for index, batch in enumerate(_batched(rows, shard_rows)):
            shards.append(Shard(str(source.resolve()), fmt, index, start, start + len(batch),
                                _rows_sha256([row for row, _, _ in batch], columns),
                                str(folder / part_name(index, version)), columns, batch[0][1], batch[-1][2]))
            start += len(batch)
    return shards


def _shard_manifest(path: Path) -> dict | None:
    """The manifest inside a complete shard file, or None (no file, or not one this command wrote)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path).metadata or {}
        return json.loads(meta[METADATA_KEY])
    except (OSError, KeyError, ValueError):
        return None


def is_complete(shard: Shard, version: str) -> dict | None:
    """The shard file's manifest when it holds exactly this shard's rows scored by ``version``."""
    manifest = _shard_manifest(Path(shard.path))
    if manifest and (manifest.get("input_sha256"), manifest.get("start"), manifest.get("stop"),
                     manifest.get("model_version")) == (shard.sha256, shard.start, shard.stop, version):
        return manifest
    return None


def remove_stale(shards: list[Shard], out_dir: Path, input_path: Path, version: str) -> list[Path]:
    """Pending files of killed runs (shards and run manifests), and parts of this model version that the plan no
    longer has (the input shrank, or another shard size): without this a row could be counted twice."""
    planned = {Path(s.path) for s in shards}
    # a run manifest cut short by a kill is pending beside the shard folders
    removed = [p for p in Path(out_dir).glob("manifest.*.json.*.pending") if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    for source in input_files(input_path, out_dir):
        folder = output_folder(out_dir, input_path, source)
        if not folder.is_dir():
            continue
        for path in [*folder.glob("*.pending"), *folder.glob(f"part-*.{version}.parquet")]:
            if path not in planned:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


# --- scoring (inside an actor) ---------------------------------------------------------------------------------
def _schema(id_column: str | None):
    import pyarrow as pa

    floats = {c for c in RESULT_COLUMNS if c not in ("cefr", "error")}
    fields = [pa.field(id_column, pa.string())] if id_column else []
    fields += [pa.field("row", pa.int64())]
    fields += [pa.field(c, pa.float64() if c in floats else pa.string()) for c in RESULT_COLUMNS]
    return pa.schema([*fields, pa.field("model_version", pa.string())])


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    pending = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.pending")
    with open(pending, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(pending, path)


def score_shard(runtime, shard: Shard) -> dict:
    """Score one shard into its Parquet file (pending, then renamed); return its manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.time()
    rows = read_shard(shard)
    results = [r for i in range(0, len(rows), CHUNK) for r in score_rows(runtime, rows[i:i + CHUNK])]
    id_column = shard.id_column
    records = []
    for offset, (row, result) in enumerate(zip(rows, results)):
        ident = row.get(id_column) if id_column else None
        records.append(({id_column: None if ident is None else str(ident)} if id_column else {})
                       | {"row": shard.start + offset} | dict.fromkeys(RESULT_COLUMNS) | result
                       | {"model_version": runtime.version})
    from essayscore.settings import threads_per_worker

    manifest = {"source": shard.source, "shard": shard.index, "start": shard.start, "stop": shard.stop,
                "rows": len(rows), "errors": sum("error" in r for r in results), "input_sha256": shard.sha256,
                "model_version": runtime.version, "file": Path(shard.path).name, "started": started,
                "finished": time.time(), "pid": os.getpid(), "encoder_threads": threads_per_worker()}
    table = pa.Table.from_pylist(records, schema=_schema(id_column))
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    Path(shard.path).parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(Path(shard.path), buffer.getvalue().to_pybytes())
    return manifest


class ShardScorer:
    """The Ray Data UDF: loads the model once per actor (the service's embedded runtime, as ``essayscore score``
    loads it), then scores the shards of each batch of descriptors."""

    def __init__(self, artifact_dir: str, version: str):
        from essayscore.artifacts import Artifact
        from essayscore.runtimes import load_runtime
        from essayscore.settings import get_settings

        self.runtime = load_runtime("embedded", Artifact.open(artifact_dir, get_settings().artifacts_dir))
        if self.runtime.version != version:
            raise BackfillError(f"the actor loaded model {self.runtime.version}, the run plans {version}")

    def __call__(self, batch):  # a pyarrow Table of descriptors -> one of manifests
        import pyarrow as pa

        shards = [Shard.from_json(d) for d in batch.column("shard").to_pylist()]
        manifests = [json.dumps(score_shard(self.runtime, shard)) for shard in shards]
        return pa.table({"path": [s.path for s in shards], "manifest": manifests})


# --- the driver ------------------------------------------------------------------------------------------------
@contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None):
    """Connected to Ray for the block: a new local cluster when ``address`` is None (``num_cpus``: the usable
    cores), else the cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``). Reuses a
    connection that is already open (and leaves it open)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before init: no usage reports from this driver or its cluster
    import ray

    from essayscore.settings import get_settings, usable_cores

    if ray.is_initialized():
        yield ray
        return
    if address is None:
        ray.init(address="local", num_cpus=num_cpus or usable_cores(), include_dashboard=False,
                 object_store_memory=get_settings().ray_object_store_mb << 20, log_to_driver=False,
                 logging_level=logging.WARNING)
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def _actor_env() -> dict[str, str]:
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    return forwarded | ACTOR_ENV


def _write_manifest(path: Path, report: Report, input_path: Path, shard_rows: int, started: float,
                    finished: float | None) -> None:
    body = {"model_version": report.model_version, "input": str(input_path.resolve()), "shard_rows": shard_rows,
            "rows": report.rows, "errors": report.errors, "complete": all(s.get("done") for s in report.shards),
            "started": started, "finished": finished, "shards": report.shards}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, json.dumps(body, indent=1).encode())


def _record(entry: dict, shard_manifest: dict) -> None:
    """A run manifest's shard entry, completed from the shard's own manifest."""
    m = shard_manifest
    entry.update(done=True, errors=m["errors"], seconds=m["finished"] - m["started"], started_at=m["started"],
                 finished_at=m["finished"], pid=m.get("pid"), encoder_threads=m.get("encoder_threads"))


def backfill(input_path: Path, out_dir: Path, model: str = "champion", ray_address: str | None = None,
             actors: int = 1, shard_rows: int | None = None) -> Report:
    """Score ``input_path`` (a CSV or Parquet file, or a folder of them) into Parquet shards under ``out_dir``,
    skipping the shards already complete; see the module docstring."""
    from essayscore.artifacts import Artifact
    from essayscore.settings import get_settings, usable_cores

    settings = get_settings()
    input_path, out_dir = Path(input_path), Path(out_dir)
    shard_rows = shard_rows or settings.backfill_shard_rows
    if actors < 1:
        raise BackfillError("--actors must be at least 1")
    artifact = Artifact.open(model, settings.artifacts_dir)  # verified here, before any cluster starts
    version = artifact.version
    shards = plan(input_path, out_dir, version, shard_rows)
    for path in remove_stale(shards, out_dir, input_path, version):
        log.info("removed %s (a killed run's pending file, or a part the plan no longer has)", path)
    report = Report(version, manifest=out_dir / f"manifest.{version}.json")
    todo = []
    for shard in shards:
        done = is_complete(shard, version)
        entry = {"source": shard.source, "shard": shard.index, "start": shard.start, "stop": shard.stop,
                 "rows": shard.rows, "input_sha256": shard.sha256, "file": shard.path, "done": False}
        report.shards.append(entry)
        if done is None:
            todo.append((shard, entry))
        else:  # complete in an earlier run: its own manifest says how it went
            _record(entry, done)
    report.skipped = len(shards) - len(todo)
    started = time.time()
    _write_manifest(report.manifest, report, input_path, shard_rows, started, None)
    if todo:
        if ray_address is None and actors > usable_cores():
            raise BackfillError(f"--actors {actors} needs {actors} CPUs; this machine has {usable_cores()}")
        by_path = {shard.path: entry for shard, entry in todo}
        with ray_cluster(ray_address) as ray:
            import ray.data

            ray.data.DataContext.get_current().enable_progress_bars = False
            descriptors = [{"shard": json.dumps(asdict(s))} for s, _ in todo]
            pool = min(actors, len(todo))  # an actor more than there are shards would only load the model
            dataset = ray.data.from_items(descriptors, override_num_blocks=len(descriptors)).map_batches(
                ShardScorer, fn_constructor_kwargs={"artifact_dir": str(artifact.dir), "version": version},
                batch_size=1, batch_format="pyarrow", num_cpus=1, runtime_env={"env_vars": _actor_env()},
                compute=ray.data.ActorPoolStrategy(size=pool, max_tasks_in_flight_per_actor=1))
            for row in dataset.iter_rows():  # streamed as shards complete
                manifest = json.loads(row["manifest"])
                _record(by_path[row["path"]], manifest)
                report.scored += 1
                log.info("shard %s/%s of %s: %s rows, %s errors", report.skipped + report.scored, len(shards),
                         manifest["source"], manifest["rows"], manifest["errors"])
                _write_manifest(report.manifest, report, input_path, shard_rows, started, None)
    _write_manifest(report.manifest, report, input_path, shard_rows, started, time.time())
    return report
