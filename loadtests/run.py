"""Headless load test of the essayscore Bento against a budget (loadtests/budget.toml).

    python loadtests/run.py --host http://127.0.0.1:3000 --users 2 --spawn-rate 2 --run-time 30s --budget ci
    python loadtests/run.py --start-embedded [--model artifacts/vX] --users 2 --run-time 30s --budget ci
    python loadtests/run.py --start-triton   [--model artifacts/vX] --users 2 --run-time 30s --budget ci

Runs ``locust --headless`` (bounded run time, --csv into a temporary folder), prints observed p50/p95/p99, error
rate and throughput per endpoint against the budget, and exits 1 when any figure breaks it (2 on a run problem).
--start-embedded / --start-triton start the servers on free 127.0.0.1 ports and stop them afterwards (the Bento and
Triton via devtools.servers' BentoServer / TritonServer, the harness the test suite uses; Triton on a cpu repository
built by training.repository, or on --triton-repo).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
FIGURES = (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))


def seconds(run_time: str) -> int:
    total = 0
    for value, unit in re.findall(r"(\d+)\s*([hms]?)", run_time):
        total += int(value) * {"h": 3600, "m": 60}.get(unit, 1)
    if total <= 0:
        raise argparse.ArgumentTypeError(f"bad --run-time {run_time!r}")
    return total


def latest_artifact() -> Path:
    from essayscore import artifacts

    return artifacts.resolve("latest", REPO / "artifacts")


def start_embedded(stack: ExitStack, model: Path, **env: str | None) -> str:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from devtools.servers import BentoServer  # the shared server harness (free port, readiness, process group)

    # a path as the model tag: the Bento resolves the folder directly (no BentoML model store needed)
    # production threading (usable cores / workers), not the test suite's OMP_NUM_THREADS=1, and the service's
    # own number of workers (one per core) unless ESSAYSCORE_WORKERS says otherwise
    server = BentoServer(model, **{"ESSAYSCORE_MODEL_TAG": str(model), "OMP_NUM_THREADS": None,
                                   "ESSAYSCORE_WORKERS": os.environ.get("ESSAYSCORE_WORKERS"), **env})
    print(f"starting the Bento ({env.get('ESSAYSCORE_RUNTIME', 'embedded')}) on {server.url} ...", flush=True)
    stack.callback(server.stop)
    server.start()
    return server.url


def start_triton(stack: ExitStack, model: Path, protocol: str, repo: Path | None, cpu_variant: str = "int8"):
    """Triton on a cpu repository of ``model`` plus a Bento that calls it; returns (the Bento's URL, the server).
    The repository's encoder is the artifact's own validated int8 export when it ships one (no re-export)."""
    from devtools.servers import TritonServer
    from devtools.triton_launcher import prepare_stub_env
    from training.repository import build_repository

    if repo is None:
        repo = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loadtest-triton-"))) / "model_repository"
        print(f"building the cpu Triton repository ({cpu_variant} encoder) in {repo} ...", flush=True)
        build_repository(model, repo, profile="cpu", cpu_variant=cpu_variant)
    triton = TritonServer(repo, stub_python_env=prepare_stub_env())
    print(f"starting tritonserver (http {triton.http_url}, grpc {triton.grpc_url}) ...", flush=True)
    stack.callback(triton.stop)
    triton.start(timeout_s=180)
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    return start_embedded(stack, model, ESSAYSCORE_RUNTIME="triton", ESSAYSCORE_TRITON_URL=url,
                          ESSAYSCORE_TRITON_PROTOCOL=protocol), triton


def warm_up(host: str, requests: int) -> None:
    """Unmeasured requests first, so the budget judges the steady state, not lazy loads on the first calls
    (spaCy, word lists, ONNX sessions, Triton's python stubs)."""
    import httpx

    essay = ("Many people believe that public transport should be free for everyone. In my opinion, this policy "
             "would reduce traffic and pollution, although it would cost governments a great deal of money. ") * 8
    with httpx.Client(base_url=host, timeout=120) as client:
        for i in range(requests):
            client.post("/score", json={"essay": essay, "prompt": "Should public transport be free?",
                                        "explain": i % 2 == 0, "include_issues": True}).raise_for_status()
        if requests:
            client.post("/score_batch", json={"items": [{"essay": essay}, {"essay": essay[::-1]}]}).raise_for_status()


def run_locust(
    host: str, users: int, spawn_rate: float, run_time: str, out: Path, tags: list[str] | None = None
) -> Path:
    prefix = out / "loadtest"
    cmd = [str(BIN / "locust"), "-f", str(HERE / "locustfile.py"), "--headless", "--host", host,
           "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", run_time, "--stop-timeout", "30",
           "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    if tags:
        cmd += ["--tags", *tags]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, timeout=seconds(run_time) + 120)
    return prefix


def read_stats(prefix: Path) -> dict:
    """The locustfile's final summary (per endpoint: requests, failures, p50/p95/p99 ms; essays scored)."""
    summary = json.loads(Path(f"{prefix}_summary.json").read_text())
    duration = max(summary["stop"] - summary["start"], 1e-9)
    return {"rows": summary["stats"], "essays": summary["essays"], "duration_s": duration,
            "essays_per_s": summary["essays"] / duration}


def check(stats: dict, budget: dict, users: int | None = None) -> tuple[list[list[str]], list[str]]:
    """Table rows [endpoint, figure, observed, budget, verdict] and the list of broken figures. A profile may
    define its latencies at ``latency_users`` and its throughput at ``throughput_users``: at another user count
    those figures are shown against the budget but not judged."""
    table, broken = [], []
    judged = {"latency": budget.get("latency_users") in (None, users),
              "throughput": budget.get("throughput_users") in (None, users)}

    def add(endpoint: str, figure: str, observed: float, limit: float | None, lower_is_better: bool, fmt: str):
        kind = "throughput" if figure == "essays_per_s" else "latency" if figure.endswith("_ms") else None
        if limit is not None and kind and not judged[kind]:
            table.append([endpoint, figure, fmt.format(observed), f"{limit:g}",
                          f"(defined at {budget[kind + '_users']} users)"])
            return
        if limit is None:
            verdict = ""
        else:
            ok = observed <= limit if lower_is_better else observed >= limit
            if ok:
                verdict = "ok"
            elif lower_is_better:
                verdict = f"BROKEN ({observed / limit:.1f}x over)" if limit > 0 else "BROKEN"
            else:
                verdict = f"BROKEN ({limit / observed:.1f}x short)" if observed > 0 else "BROKEN"
            if not ok:
                broken.append(f"{endpoint} {figure}")
        table.append([endpoint, figure, fmt.format(observed), "-" if limit is None else f"{limit:g}", verdict])

    rows = stats["rows"]
    endpoints = budget.get("endpoints", {})
    for name in sorted((set(rows) | set(endpoints)) - {"Aggregated"}):
        row, limits = rows.get(name), endpoints.get(name, {})
        if row is None:
            table.append([name, "requests", "0", "-", "BROKEN (no requests)"])
            broken.append(f"{name} requests")
            continue
        n, fails = row["requests"], row["failures"]
        table.append([name, "requests", str(n), "-", ""])
        for figure, column in FIGURES:
            add(name, figure, float(row[column]) if n else 0.0, limits.get(figure), True, "{:.0f}")
        add(name, "error_rate", fails / n if n else 0.0, limits.get("max_error_rate"), True, "{:.3f}")
    total = rows["Aggregated"]
    n, fails = total["requests"], total["failures"]
    add("all", "error_rate", fails / n if n else 1.0, budget.get("max_error_rate"), True, "{:.3f}")
    add("all", "requests_per_s", n / stats["duration_s"], None, False, "{:.2f}")
    add("all", "essays_per_s", stats["essays_per_s"], budget.get("min_essays_per_s"), False, "{:.2f}")
    return table, broken


def print_table(table: list[list[str]]) -> None:
    head = ["endpoint", "figure", "observed", "budget", "verdict"]
    widths = [max(len(r[i]) for r in table + [head]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths]] + table:
        print("  ".join(c.ljust(w) if i in (0, 1, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", help="the Bento's base URL (http://127.0.0.1:PORT); not with --start-*")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--start-embedded", action="store_true", help="start an embedded-runtime Bento")
    start.add_argument("--start-triton", action="store_true", help="start Triton (cpu repository) and its Bento")
    p.add_argument("--model", type=Path, help="artifact folder for --start-*; default: the latest in artifacts/")
    p.add_argument("--triton-repo", type=Path, help="an existing model repository for --start-triton (skip the build)")
    p.add_argument("--triton-protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--users", type=int, default=2)
    p.add_argument("--spawn-rate", type=float, default=2)
    p.add_argument("--run-time", default="30s")
    p.add_argument("--budget", default="ci", help="profile in the budget file")
    p.add_argument("--budget-file", type=Path, default=HERE / "budget.toml")
    p.add_argument("--csv-dir", type=Path, help="keep Locust's CSVs here (default: a temporary folder)")
    p.add_argument("--tags", nargs="+", help="only the locustfile tasks with these tags (e.g. score)")
    p.add_argument("--warmup", type=int, default=4, help="unmeasured /score requests before the run (default 4)")
    args = p.parse_args(argv)
    if bool(args.host) == (args.start_embedded or args.start_triton):
        p.error("give exactly one of --host, --start-embedded, --start-triton")
    if not 1 <= args.users <= 64 or seconds(args.run_time) > 600:
        p.error("keep it bounded: 1-64 users, run time <= 10 min")
    if args.host and not re.match(r"https?://(127\.0\.0\.1|localhost)(:\d+)?/?$", args.host):
        p.error("load traffic goes to 127.0.0.1 only")
    profiles = tomllib.loads(args.budget_file.read_text())
    if args.budget not in profiles:
        p.error(f"no profile {args.budget!r} in {args.budget_file} (have: {', '.join(profiles)})")
    budget = profiles[args.budget]

    with ExitStack() as stack:
        try:
            if args.host:
                host = args.host.rstrip("/")
            else:
                sys.path.insert(0, str(REPO))
                model = (args.model or latest_artifact()).resolve()
                host = (start_triton(stack, model, args.triton_protocol, args.triton_repo)[0] if args.start_triton
                        else start_embedded(stack, model, ESSAYSCORE_RUNTIME="embedded"))
            out = args.csv_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loadtest-")))
            out.mkdir(parents=True, exist_ok=True)
            warm_up(host, args.warmup)
            stats = read_stats(run_locust(host, args.users, args.spawn_rate, args.run_time, out, args.tags))
        except Exception as exc:  # noqa: BLE001 - a run problem, not a budget verdict
            print(f"load test could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    table, broken = check(stats, budget, args.users)
    print(f"\nbudget '{args.budget}' ({args.budget_file.name}); {args.users} user(s), {args.run_time}, "
          f"{stats['essays']} essays in {stats['duration_s']:.1f} s")
    notes = {k: v for k, v in budget.items() if k.endswith("_users")}
    if notes and any(v != args.users for v in notes.values()):
        print(f"note: this profile is defined at {notes}; observed at {args.users} user(s)")
    print_table(table)
    if broken:
        print(f"\nBUDGET BROKEN: {', '.join(broken)}")
        return 1
    print("\nbudget met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
