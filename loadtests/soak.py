"""Soak test: the project's locustfile for a long run, with every Bento worker's RSS sampled, judged on errors
and on memory growth.

    python loadtests/soak.py --start-embedded [--model artifacts/vX] [--run-time 10m --users 8 --workers 1]
    python loadtests/soak.py --start-embedded --negative-control --run-time 45s   # must FAIL on memory
    python loadtests/soak.py --host http://127.0.0.1:3000 --server-pid PID        # a Bento started elsewhere

Runs ``locust --headless`` the way loadtests/run.py does (same locustfile, same summary: the deliberately
invalid requests count as failures only when they are not answered 4xx with their error code) and, meanwhile,
samples the RSS of each ``bentoml serve`` worker (the ``_bentoml_impl.worker.service`` processes under the serve
process, per PID) every ``--interval`` seconds. Verdict (exit 1, with the reason):

* any locust failure (an unexpected status, a wrong body, a connection error) on any endpoint;
* a worker that disappeared during the run (a crash; BentoML would restart it under a new PID);
* memory growth: the least-squares slope of a worker's RSS over the samples after the first third of the run
  (warm-up: lazy loads, allocator arenas, caches filling) above ``--max-mb-per-min`` (default 3 MB/min,
  docs/reliability.md "Soak" says why). The slope over the last third alone is reported too (not judged): a
  curve that is still flattening shows a smaller one.

Exit 2 when the run itself failed. A JSON and a markdown summary are written to ``--out`` (default: a new
temporary folder), with the samples. ``--negative-control`` serves ``loadtests.leaky_service`` with
``ESSAYSCORE_TEST_LEAK_KB_PER_REQUEST=--leak-kb`` (a deliberate leak per request) instead: proof that the memory
check can fail.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(HERE), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

import run as loadrun  # noqa: E402 - loadtests/run.py: the same locust invocation and summary

WORKER_MARK = "_bentoml_impl.worker.service"
LEAKY_SERVICE = "loadtests.leaky_service:EssayScoreService"


# --------------------------------------------------------------------------------------------------
# RSS sampling
# --------------------------------------------------------------------------------------------------
def worker_processes(server_pid: int) -> list:
    """The Bento's worker processes (psutil.Process) under the ``bentoml serve`` process ``server_pid``."""
    import psutil

    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for proc in children:
        try:
            if WORKER_MARK in " ".join(proc.cmdline()):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


class RssSampler(threading.Thread):
    """Samples every worker's RSS (MB) every ``interval_s`` into ``samples``: {pid: [(t_s, rss_mb), ...]},
    t_s counted from :meth:`mark` (the start of the load)."""

    def __init__(self, server_pid: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.interval_s = server_pid, interval_s
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self.t0 = time.monotonic()
        self._stop_event = threading.Event()

    def mark(self) -> None:
        self.t0 = time.monotonic()

    def sample_once(self) -> None:
        import psutil

        t = time.monotonic() - self.t0
        for proc in worker_processes(self.server_pid):
            try:
                rss = proc.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self.samples.setdefault(proc.pid, []).append((round(t, 2), round(rss, 2)))

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample_once()
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope (MB per minute) of (t_s, rss_mb) points; None with fewer than 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (r - mr) for t, r in points) / var * 60.0


def judge_memory(samples: dict[int, list[tuple[float, float]]], run_s: float, budget: float) -> tuple[list, list]:
    """Per worker: start/end RSS, slope after the warm-up third; and the list of broken figures."""
    workers, broken = [], []
    warm = run_s / 3.0
    for pid, points in sorted(samples.items()):
        steady = [(t, r) for t, r in points if warm <= t <= run_s]
        slope = slope_mb_per_min(steady)
        last = slope_mb_per_min([(t, r) for t, r in steady if t >= 2 * warm])
        row: dict[str, object] = {"pid": pid, "samples": len(points), "steady_samples": len(steady),
               "rss_start_mb": points[0][1], "rss_end_mb": points[-1][1],
               "rss_steady_start_mb": steady[0][1] if steady else None, "rss_max_mb": max(r for _, r in points),
               "slope_mb_per_min": None if slope is None else round(slope, 3),
               "slope_last_third_mb_per_min": None if last is None else round(last, 3)}
        if slope is None:
            row["verdict"] = "too few samples after warm-up"
            broken.append(f"worker {pid}: only {len(steady)} RSS samples after the warm-up third")
        elif slope > budget:
            row["verdict"] = f"BROKEN ({slope:.2f} MB/min > {budget:g})"
            broken.append(f"worker {pid} RSS slope {slope:.2f} MB/min > budget {budget:g} MB/min")
        else:
            row["verdict"] = "ok"
        workers.append(row)
    return workers, broken


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
def read_failures(prefix: Path) -> list[dict]:
    """Locust's failure table (method, name, error, occurrences)."""
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{"method": r["Method"], "name": r["Name"], "error": r["Error"][:300],
                 "occurrences": int(r["Occurrences"])} for r in csv.DictReader(f)]


def judge_errors(stats: dict, failures: list[dict]) -> list[str]:
    broken = []
    for name, row in sorted(stats["rows"].items()):
        if name != "Aggregated" and row["failures"]:
            broken.append(f"{name}: {row['failures']} of {row['requests']} requests failed")
    for f in failures[:5]:
        broken.append(f"  {f['occurrences']}x {f['method']} {f['name']}: {f['error']}")
    return broken


def server_errors(log_path: Path | None) -> int:
    """5xx answers in the Bento's access log (BentoML logs a traceback for every schema error, an expected 400,
    so tracebacks are no sign; a 5xx always is)."""
    if log_path is None or not Path(log_path).exists():
        return 0
    return len(re.findall(r"\(status=5\d\d,", Path(log_path).read_text(errors="replace")))


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [f"# Soak: {report['verdict']}", "",
             f"{cfg['users']} users, {cfg['run_time']} ({report['duration_s']:.0f} s of load), {cfg['workers']} "
             f"worker(s), service `{cfg['service']}`{' (negative control, ' + str(cfg['leak_kb']) + ' KB/request)' if cfg['negative_control'] else ''}; "  # noqa: E501
             f"RSS every {cfg['interval_s']:g} s, slope after the first third, budget {cfg['max_mb_per_min']:g} MB/min "
             f"per worker. Machine: {report['machine']['cores']} cores, load average "
             f"{report['machine']['loadavg_start']} at start, {report['machine']['loadavg_end']} at end.", "",
             "| endpoint | requests | failures | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in sorted(report["endpoints"].items()):
        lines.append(f"| {name} | {r['requests']} | {r['failures']} | {r['p50']:.0f} | {r['p95']:.0f} | "
                     f"{r['p99']:.0f} |")
    lines += ["", f"{report['essays']} essays scored, {report['essays_per_s']:.2f} essays/s.", "",
              "| worker PID | RSS start MB | RSS after warm-up MB | RSS end MB | slope MB/min | last third MB/min "
              "| verdict |", "|---:|---:|---:|---:|---:|---:|---|"]
    for w in report["workers"]:
        lines.append(f"| {w['pid']} | {w['rss_start_mb']:.0f} | {w['rss_steady_start_mb'] or 0:.0f} | "
                     f"{w['rss_end_mb']:.0f} | {w['slope_mb_per_min']} | {w['slope_last_third_mb_per_min']} | "
                     f"{w['verdict']} |")
    if report["broken"]:
        lines += ["", "Broken:", *[f"- {b}" for b in report["broken"]]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", help="the Bento's base URL (with --server-pid); not with --start-embedded")
    p.add_argument("--server-pid", type=int, help="PID of the `bentoml serve` process behind --host")
    p.add_argument("--start-embedded", action="store_true", help="start an embedded-runtime Bento (free port)")
    p.add_argument("--model", type=Path, help="artifact folder for --start-embedded; default: the latest")
    p.add_argument("--workers", type=int, default=1, help="Bento workers for --start-embedded (default 1)")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--spawn-rate", type=float, default=8)
    p.add_argument("--run-time", default="10m")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    p.add_argument("--max-mb-per-min", type=float, default=3.0, help="RSS slope budget per worker (default 3)")
    p.add_argument("--warmup", type=int, default=4, help="unmeasured /score requests before the run (default 4)")
    p.add_argument("--negative-control", action="store_true",
                   help="serve loadtests.leaky_service with a deliberate leak: the memory check must fail")
    p.add_argument("--leak-kb", type=int, default=64, help="KB kept per request by --negative-control (default 64)")
    p.add_argument("--out", type=Path, help="folder for soak.json, soak.md, the locust CSVs and the Bento log")
    args = p.parse_args(argv)
    if bool(args.host) == args.start_embedded:
        p.error("give exactly one of --host (with --server-pid) or --start-embedded")
    if args.host and (args.server_pid is None or args.negative_control):
        p.error("--host needs --server-pid (to find the workers) and cannot run --negative-control")
    if args.host and not re.match(r"https?://(127\.0\.0\.1|localhost)(:\d+)?/?$", args.host):
        p.error("load traffic goes to 127.0.0.1 only")
    run_s = loadrun.seconds(args.run_time)
    if not 1 <= args.users <= 64 or run_s > 3600:
        p.error("keep it bounded: 1-64 users, run time <= 60 min")
    out = args.out or Path(tempfile.mkdtemp(prefix="soak-"))
    out.mkdir(parents=True, exist_ok=True)
    service = LEAKY_SERVICE if args.negative_control else "service:EssayScoreService"
    loadavg_start = [round(x, 2) for x in os.getloadavg()]

    with ExitStack() as stack:
        try:
            server = None
            if args.host:
                host, server_pid = args.host.rstrip("/"), args.server_pid
            else:
                from devtools.servers import BentoServer

                model = (args.model or loadrun.latest_artifact()).resolve()
                env: dict[str, str | None] = {
                    "ESSAYSCORE_MODEL_TAG": str(model), "ESSAYSCORE_RUNTIME": "embedded", "OMP_NUM_THREADS": None,
                    "ESSAYSCORE_WORKERS": str(args.workers)}
                if args.negative_control:
                    env["ESSAYSCORE_TEST_LEAK_KB_PER_REQUEST"] = str(args.leak_kb)
                server = BentoServer(model, service=service, log_path=out / "bento.log", **env)
                print(f"starting the Bento ({service}, {args.workers} worker(s)) on {server.url} ...", flush=True)
                stack.callback(server.stop)
                server.start()
                host, server_pid = server.url, server.pid
            loadrun.warm_up(host, args.warmup)
            sampler = RssSampler(server_pid, args.interval)
            if not worker_processes(server_pid):
                raise RuntimeError(f"no BentoML worker processes ({WORKER_MARK}) under PID {server_pid}")
            sampler.mark()
            sampler.start()
            try:
                prefix = loadrun.run_locust(host, args.users, args.spawn_rate, args.run_time, out)
            finally:
                sampler.stop()
            stats = loadrun.read_stats(prefix)
            failures = read_failures(prefix)
            alive_at_end = {proc.pid for proc in worker_processes(server_pid)}
        except Exception as exc:  # noqa: BLE001 - a run problem, not a verdict
            print(f"soak could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    answered_5xx = server_errors(server.log_path if server is not None else None)

    broken = judge_errors(stats, failures)
    gone = sorted(set(sampler.samples) - alive_at_end)
    if gone:
        broken.append(f"worker(s) {gone} disappeared during the run (crashed or restarted)")
    if answered_5xx:
        broken.append(f"{answered_5xx} answer(s) with status 5xx in the Bento log {server.log_path if server else ''}")
    workers, memory_broken = judge_memory(sampler.samples, min(run_s, stats["duration_s"]), args.max_mb_per_min)
    if not workers:
        broken.append("no RSS samples")
    broken += memory_broken
    verdict = "FAILED" if broken else "passed"
    report = {
        "verdict": verdict, "broken": broken,
        "config": {"users": args.users, "spawn_rate": args.spawn_rate, "run_time": args.run_time, "run_s": run_s,
                   "workers": args.workers if args.start_embedded else None, "service": service,
                   "negative_control": args.negative_control, "leak_kb": args.leak_kb if args.negative_control else 0,
                   "interval_s": args.interval, "max_mb_per_min": args.max_mb_per_min, "host": host},
        "machine": {"cores": os.cpu_count(), "loadavg_start": loadavg_start,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "duration_s": stats["duration_s"], "essays": stats["essays"], "essays_per_s": stats["essays_per_s"],
        "endpoints": stats["rows"], "failures": failures, "log_5xx": answered_5xx, "workers": workers,
        "samples": {str(pid): pts for pid, pts in sampler.samples.items()},
    }
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    (out / "soak.md").write_text(md)
    print("\n" + md)
    print(f"summary: {out / 'soak.json'}, {out / 'soak.md'}")
    if broken:
        print("SOAK FAILED: " + "; ".join(b.strip() for b in broken if not b.startswith("  ")))
        return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
