"""Backfill on Ray (``essayscore backfill``) against the batch CLI (``essayscore score``), side by side on the same
input in one run: essays per second for the batch CLI, 1 actor and 2 actors.

    .venv/bin/python benchmarks/bench_backfill.py [--model champion] [--essays 200] [--repeats 3] [--shard-rows 25]

Prints a markdown section (docs/performance.md, "Backfill on Ray"). Each repeat runs the three in turn on the same
CSV (real essays of the shared set, each with its prompt), each in a fresh process; the table gives medians over
repeats.

* batch CLI: the two calls of ``essayscore score`` (load the embedded runtime as the CLI does, intra-op threads =
  usable cores; then ``score_csv``), timed apart, in a fresh process (this script with ``--batch-once``).
* backfill: the real ``essayscore backfill`` command, which starts its own local Ray cluster, into a fresh output
  folder each time.

"end to end" is the command's wall time (process start, imports, model load; for backfill also the cluster and
the actors' start). "scoring" is the rows over the time spent scoring: ``score_csv`` alone, and from the first
shard's start to the last shard's end (the shard manifests' times). Every backfill output is checked equal to the
batch CLI's.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_triton import machine, pick_essays
from common import load_average_before


def write_input(path: Path, n: int) -> Path:
    essays, prompts = pick_essays(n, seed=3)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["essay_id", "prompt", "essay"])
        writer.writeheader()
        writer.writerows({"essay_id": f"e{i}", "prompt": p, "essay": e}
                         for i, (e, p) in enumerate(zip(essays, prompts)))
    return path


def batch_once(model: str, input_csv: Path, out: Path) -> None:
    """In a fresh process: what ``essayscore score`` runs, the load and the scoring timed apart (JSON on stdout)."""
    from essayscore.artifacts import Artifact
    from essayscore.batch import score_csv
    from essayscore.runtimes import load_runtime
    from essayscore.settings import get_settings

    t0 = time.perf_counter()
    runtime = load_runtime(get_settings().runtime, Artifact.open(model, get_settings().artifacts_dir))
    t1 = time.perf_counter()
    counts = score_csv(runtime, input_csv, out, progress=False)
    print(json.dumps({"rows": counts["rows"], "load_s": t1 - t0, "scoring_s": time.perf_counter() - t1}))


def run_batch(model: str, input_csv: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--batch-once", str(input_csv), str(out), "--model", model],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"end_to_end_s": time.perf_counter() - t0}


def run_backfill(model: str, input_csv: Path, out: Path, actors: int, shard_rows: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "essayscore.cli", "backfill", str(input_csv), "--out", str(out),
                    "--model", model, "--actors", str(actors), "--shard-rows", str(shard_rows)],
                   capture_output=True, text=True, check=True)
    t1 = time.perf_counter()
    manifest = json.loads(next(out.glob("manifest.*.json")).read_text())
    shards = manifest["shards"]
    first_start = {}  # each actor's first shard
    for shard in sorted(shards, key=lambda s: s["started_at"]):
        first_start.setdefault(shard["pid"], shard["started_at"])
    return {"rows": manifest["rows"], "end_to_end_s": t1 - t0,
            "skew_s": max(first_start.values()) - min(first_start.values()),
            "scoring_s": max(s["finished_at"] for s in shards) - min(s["started_at"] for s in shards),
            "actors_seen": len({s["pid"] for s in shards}), "shard_s": statistics.median(s["seconds"] for s in shards)}


def same_scores(batch_csv: Path, out: Path) -> bool:
    import pyarrow.parquet as pq

    from essayscore.batch import RESULT_COLUMNS

    with open(batch_csv, newline="", encoding="utf-8") as handle:
        expected = {r["essay_id"]: r for r in csv.DictReader(handle)}
    rows = [r for p in sorted(out.rglob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    as_text = lambda v: "" if v is None else str(v)  # the CSV writes floats with str()
    return len(rows) == len(expected) and all(as_text(r[c]) == expected[r["essay_id"]][c]
                                              for r in rows for c in RESULT_COLUMNS)


SECTION = "## Backfill on Ray"


def update_section(path: Path, body: str) -> None:
    """Replace the SECTION of a markdown file (up to the next '## ' heading) with ``body``, or append it."""
    text = path.read_text()
    start = text.find(f"\n{SECTION}\n")
    if start < 0:
        path.write_text(text.rstrip("\n") + f"\n\n{SECTION}\n\n{body}")
        return
    end = text.find("\n## ", start + 1)
    path.write_text(text[:start] + f"\n{SECTION}\n\n{body}" + (text[end:] if end >= 0 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="champion")
    parser.add_argument("--essays", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-rows", type=int, default=25, help="rows per shard (default 25: 8 shards of 200)")
    parser.add_argument("--update", type=Path, help="also write the section into this markdown file (replacing its "
                                                    f"'{SECTION}' section, or appended), e.g. docs/performance.md")
    parser.add_argument("--batch-once", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_once:
        return batch_once(args.model, Path(args.batch_once[0]), Path(args.batch_once[1]))

    from essayscore.settings import get_settings

    load_start = load_average_before()
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    input_csv = write_input(work / "in.csv", args.essays)
    variants = [("batch CLI (`essayscore score`)", 0), ("backfill, 1 actor", 1), ("backfill, 2 actors", 2)]
    results: dict[str, list[dict]] = {label: [] for label, _ in variants}
    equal = True
    try:
        for repeat in range(args.repeats):
            for label, actors in variants:
                print(f"repeat {repeat + 1}/{args.repeats}: {label} ...", file=sys.stderr, flush=True)
                if not actors:
                    results[label].append(run_batch(args.model, input_csv, work / "batch.csv"))
                else:
                    out = work / f"out-{actors}"
                    results[label].append(run_backfill(args.model, input_csv, out, actors, args.shard_rows))
                    equal &= same_scores(work / "batch.csv", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()[0]

    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    batch_label = variants[0][0]
    base_e2e = args.essays / median(batch_label, "end_to_end_s")
    base_scoring = args.essays / median(batch_label, "scoring_s")
    lines = [
        f"`benchmarks/bench_backfill.py --essays {args.essays} --repeats {args.repeats} --shard-rows "
        f"{args.shard_rows}` on {machine()}, {time.strftime('%Y-%m-%d', time.gmtime())}; 1-min load average "
        f"{load_start:.2f} at the start, {load_end:.2f} at the end (the machine is shared with other work). "
        f"{args.essays} essays of 260-340 words with their prompts, one CSV, {-(-args.essays // args.shard_rows)} "
        f"shards; medians of {args.repeats} repeats, the three taking turns, each a fresh process. Backfill "
        f"starts its own local cluster (2 CPUs, {get_settings().ray_object_store_mb} MB object store, no "
        "dashboard) each time; its actors run one CPU and one thread each, the batch CLI's encoder two threads. "
        "End to end = the command's wall time; scoring = rows over the time spent scoring (batch: `score_csv`; "
        "backfill: first shard's start to last shard's end). Design and what changes on a cluster: "
        "[backfill.md](backfill.md).",
        "",
        "| path | end to end s | essays/s end to end | × batch | scoring s | essays/s scoring | × batch "
        "| s per shard | actor start skew s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, actors in variants:
        e2e, scoring = median(label, "end_to_end_s"), median(label, "scoring_s")
        shard = f"{median(label, 'shard_s'):.2f}" if actors else "–"
        skew = f"{median(label, 'skew_s'):.1f}" if actors > 1 else "–"
        lines.append(f"| {label} | {e2e:.1f} | {args.essays / e2e:.2f} | {args.essays / e2e / base_e2e:.2f}× | "
                     f"{scoring:.1f} | {args.essays / scoring:.2f} | {args.essays / scoring / base_scoring:.2f}× | "
                     f"{shard} | {skew} |")
    lines += ["", f"Batch CLI model load: {median(batch_label, 'load_s'):.1f} s (median). Every backfill output "
              "equal to the batch CLI's (band, raw band, CEFR, probabilities, length adjustment, error): "
              f"{'yes' if equal else '**no**'}. Actors that scored shards, per 2-actor run: "
              f"{[r['actors_seen'] for r in results[variants[2][0]]]}.", ""]
    body = "\n".join(lines)
    print(body)
    if args.update:
        update_section(args.update, body)
        print(f"wrote the '{SECTION}' section of {args.update}", file=sys.stderr)


if __name__ == "__main__":
    main()
