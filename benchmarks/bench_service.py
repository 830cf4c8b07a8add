"""The service performance report: docs/performance.md and docs/performance_throughput.png.

    .venv/bin/python benchmarks/bench_service.py [--model artifacts/vX] [--n 30] [--users 1 2 4 8 16]
                                                 [--step-s 20] [--quick] [--out docs/performance.md]

Everything is measured in this one run on this machine, side by side; essays are ~300 words (260-340) from the
shared set, each with its prompt, one request at a time unless the section says otherwise.

1. Per-stage latency in-process, through the service's own code (``EssayScoreService._score_many`` with
   explain=true and include_issues=true, then the response's JSON serialisation): validation, features (with
   spaCy and grammar-check parts), tokenisation, encoder, trees, warnings, SHAP, serialisation.
2. What was tried on the biggest stage (the encoder), variants interleaved essay by essay: padded vs split
   window batches, the prompt-embedding cache, intra-op threads, the int8 ONNX encoder, features and encoder
   overlapped on two threads.
3. Paths, one request at a time, taking turns: the bare pipeline (``EssayScorer.score``), the service logic
   in-process, the Bento over HTTP (embedded runtime with the PyTorch and with the int8 ONNX encoder; Triton
   runtime), and Triton's ensemble called directly over gRPC. BentoML's overhead = HTTP latency - the server's
   own ``total_ms``.
4. Throughput and latency against concurrency: Locust (``loadtests/locustfile.py --tags score``) at each user
   count against the Triton-backed Bento and the embedded Bento in each configuration of CONFIGURATIONS (the one
   before issue 13, each change tried, the shipped default); plotted.
5. What each change tried for two cores did, against the configuration before: p95 at 1 user, essays/s at 8.

The embedded runtime serves the artifact's int8 ONNX encoder by default (``ESSAYSCORE_EMBEDDED_ENCODER=torch``
for PyTorch); the cpu Triton repository reuses that export and is built into ``--repo``.
6. Memory: resident (RSS) and unique (USS) memory of every process, after warm-up and the peak under load.
7. GPU: the encoder on CUDA when torch sees a GPU; otherwise the report says none was used.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import tomllib

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "loadtests"), str(REPO / "tests")]

from bench_triton import machine, pick_essays
from common import feature_stage_seconds

BEFORE, SHIPPED = "before: 1 worker, stages in turn", "shipped: 2 workers, released, overlapped"
# the goals: loadtests/budget.toml's target profile (the one loadtests/run.py --budget target checks), and issue 13's
# memory goal per worker
TARGET = tomllib.loads((REPO / "loadtests" / "budget.toml").read_text())["target"]
LATENCY_USERS, THROUGHPUT_USERS = TARGET["latency_users"], TARGET["throughput_users"]
P95_GOAL_MS, THROUGHPUT_GOAL = TARGET["endpoints"]["/score"]["p95_ms"], TARGET["min_essays_per_s"]
WORKER_RSS_GOAL_MB = 600


def _settings(workers: str | None, release: str | None, overlap: str | None) -> dict[str, str | None]:
    """The environment of one configuration; None leaves a setting at its default."""
    return {"ESSAYSCORE_WORKERS": workers, "ESSAYSCORE_RELEASE_BUSY_CONNECTIONS": release,
            "ESSAYSCORE_OVERLAP_ENCODER": overlap}


# the embedded runtime (int8 ONNX encoder) in each configuration tried for throughput on two cores (issue 13)
CONFIGURATIONS: list[tuple[str, dict[str, str | None]]] = [
    (BEFORE, _settings("1", "false", "false")),
    ("1 worker, encoder overlapped", _settings("1", "false", "true")),
    ("2 workers, keep-alive sticky", _settings("2", "false", "false")),
    ("2 workers, busy connections released", _settings("2", "true", "false")),
    (SHIPPED, _settings(None, None, None)),
]


def stats(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), float(np.percentile(ms, 95))


def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def f1(x: float) -> str:
    return f"{x:.1f}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# 1. stages
# --------------------------------------------------------------------------------------------------------
def stage_breakdown(svc, essays, prompts, other_essays) -> str:
    from essayscore.api_models import ScoreResponse
    from essayscore.settings import serving_workers, threads_per_worker

    stages = ["validation_ms", "features_ms", "tokenise_ms", "encoder_ms", "trees_ms", "warnings_ms", "explain_ms"]
    seen: dict[str, list[float]] = {s: [] for s in stages + ["serialisation_ms", "total_ms"]}
    for essay, prompt in zip(essays, prompts):
        outcome, payload = svc._score_many([{"essay": essay, "prompt": prompt, "explain": True,
                                             "include_issues": True}])[0]
        assert outcome.ok, outcome.error
        t0 = time.perf_counter()
        ScoreResponse.model_validate(payload).model_dump_json()
        ser = (time.perf_counter() - t0) * 1e3
        for s in stages:
            seen[s].append(payload["timings"].get(s, 0.0))
        seen["serialisation_ms"].append(ser)
        seen["total_ms"].append(payload["timings"]["total_ms"] + ser)

    # the features stage split (other essays of the same length: the grammar checker caches texts it has seen)
    parse_s, check_s = feature_stage_seconds(svc.api.runtime.scorer.extractor, other_essays)
    spacy_ms, grammar_ms = [1e3 * x for x in parse_s], [1e3 * x for x in check_s]

    total = statistics.median(seen["total_ms"])
    names = {"validation_ms": "validation (schema + text rules)", "features_ms": "features (91 signals)",
             "tokenise_ms": "tokenisation + windows",
             "encoder_ms": f"encoder ({svc.api.runtime.scorer.encoder.name}, {svc.api.runtime.encoder_backend})",
             "trees_ms": "trees (preprocess + XGBoost, both heads)", "warnings_ms": "warnings",
             "explain_ms": "SHAP explanation (pred_contribs)", "serialisation_ms": "serialisation (JSON)",
             "total_ms": "**total** (server-side, before HTTP)"}
    rows = []
    for key, label in names.items():
        med, p95 = stats(seen[key])
        rows.append([label, f1(med), f1(p95), f"{100 * med / total:.0f}%" if key != "total_ms" else "100%"])
        if key == "features_ms":
            for sub, values in (("&nbsp;&nbsp;of which spaCy parse", spacy_ms), ("&nbsp;&nbsp;of which grammar check",
                                                                                  grammar_ms)):
                med, p95 = stats(values)
                rows.append([sub, f1(med), f1(p95), f"{100 * med / total:.0f}%"])
    overlap = ("The features and the encoder run at the same time (`overlap_encoder`, the encoder on a thread of its "
               "own), so their shares add up to more than 100%: the total is about the longer of the two plus the "
               "rest. " if svc.api.runtime.scorer._overlap is not None else "")
    return (table(["stage", "median ms", "p95 ms", "share of median total"], rows) + "\n\n" + overlap
            + f"This process is timed as one Bento worker of the shipped configuration: its encoder has "
              f"{threads_per_worker()} intra-op thread(s) (the usable cores shared among {serving_workers()} "
              "workers).")


# --------------------------------------------------------------------------------------------------------
# 2. what was tried on the encoder
# --------------------------------------------------------------------------------------------------------
def encoder_variants(torch_scorer, onnx_scorer, essays, prompts) -> str:
    import torch

    from essayscore.settings import get_settings, threads_per_worker, usable_cores

    settings = get_settings()
    threads = usable_cores()  # PyTorch as one process would run it; the ONNX encoder as a Bento worker does
    torch.set_num_threads(threads)
    pool = ThreadPoolExecutor(1)

    def embed(max_padding: float, cached_prompt: bool, n_threads: int = threads, scorer=torch_scorer):
        def run(essay, prompt):
            settings.encoder_max_padding = max_padding
            torch.set_num_threads(n_threads)
            if cached_prompt:
                scorer.embed([essay], [prompt])  # make sure the prompt is in the cache, untimed
            else:
                scorer._prompt_cache = type(scorer._prompt_cache)(scorer._prompt_cache.size)
            t = {}
            scorer.embed([essay], [prompt], t)
            return t["tokenise_ms"] + t["encoder_ms"]
        return run

    def whole(overlap: bool, scorer=onnx_scorer):
        def run(essay, prompt):
            settings.encoder_max_padding = default_padding
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            if overlap:  # features on a second thread while this one runs the encoder
                future = pool.submit(scorer.features, [essay], [prompt])
                scorer.embed([essay], [prompt])
                future.result()
            else:
                scorer.features([essay], [prompt])
                scorer.embed([essay], [prompt])
            return (time.perf_counter() - t0) * 1e3
        return run

    default_padding = settings.encoder_max_padding
    shipped = "int8 ONNX encoder, per-essay split batches + prompt cache hit (shipped default)"
    variants = {
        "PyTorch, essay + prompt windows in one batch padded to the longest (before)": embed(1e9, False),
        f"PyTorch, split batches (padding <= {default_padding:.0%} of real tokens)": embed(default_padding, False),
        "PyTorch, split batches + prompt-embedding cache hit": embed(default_padding, True),
        "PyTorch, as above, 1 intra-op thread (what each of 2 workers gets)": embed(default_padding, True, 1),
        shipped: embed(default_padding, True, scorer=onnx_scorer),
        "features + embedding, one after the other (before)": whole(False),
        "features + embedding overlapped on 2 threads (shipped: overlap_encoder)": whole(True),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for essay, prompt in zip(essays, prompts):
            onnx_scorer.features([essay], [prompt])  # untimed: every timed features call sees a cached grammar check
            for name, run in variants.items():
                times[name].append(run(essay, prompt))
    finally:
        settings.encoder_max_padding = default_padding
        torch.set_num_threads(threads)
        pool.shutdown()
    base = statistics.median(next(iter(times.values())))
    rows = []
    for i, (name, values) in enumerate(times.items()):
        med, p95 = stats(values)
        ref = base if i < 5 else statistics.median(times["features + embedding, one after the other (before)"])
        rows.append([name, f1(med), f1(p95), f"{ref / med:.2f}x"])
    return table(["encoder variant (tokenise + encode, ms)", "median ms", "p95 ms", "speed-up"], rows[:5]) + \
        "\n\n" + table(["features and encoder together", "median ms", "p95 ms", "speed-up"], rows[5:]) + \
        f"\n\n(PyTorch {torch.__version__}, {threads} intra-op thread(s) unless stated; ONNX Runtime with " \
        f"{threads_per_worker()} intra-op thread(s), no spinning; in the last two rows the " \
        "grammar check of every essay was cached by an untimed call first, identically for both.)"


# --------------------------------------------------------------------------------------------------------
# 3. paths
# --------------------------------------------------------------------------------------------------------
def paths(svc, scorer, bentos: dict[str, str | None], triton_grpc: str | None, n: int) -> str:
    """Each path gets its own first-time essays (same length band), since the grammar checker and the prompt
    cache remember texts per process; the paths still take turns request by request."""
    import httpx

    from essayscore.api_models import ScoreResponse
    from essayscore.essay_scorer import LruCache

    clients = {name: httpx.Client(base_url=url, timeout=120) for name, url in bentos.items() if url}
    grpc = None
    if triton_grpc:
        import tritonclient.grpc as grpcclient

        from essayscore import triton_io

        grpc = grpcclient.InferenceServerClient(triton_grpc)
    scorer._prompt_cache = LruCache(scorer._prompt_cache.size)  # sections 1-2 saw prompts this process may reuse

    def bare(essay, prompt):
        return scorer.score([essay], [prompt])[0].ielts_band

    def service_logic(essay, prompt):
        payload = svc._score_many([{"essay": essay, "prompt": prompt}])[0][1]
        ScoreResponse.model_validate(payload).model_dump_json()
        return payload["ielts_band"]

    server_total: dict[str, list[float]] = {name: [] for name in clients}

    def over_http(name):
        def call(essay, prompt):
            r = clients[name].post("/score", json={"essay": essay, "prompt": prompt})
            r.raise_for_status()
            server_total[name].append(r.json()["timings"]["total_ms"])
            return r.json()["ielts_band"]
        return call

    runs = {"bare pipeline in-process (EssayScorer.score)": bare,
            "service logic in-process (validation, scoring, warnings, format, JSON)": service_logic}
    runs.update({f"Bento over HTTP, {name}": over_http(name) for name in clients})
    if grpc is not None:
        runs["Triton ensemble directly over gRPC"] = lambda e, p: triton_io.score(grpc, e, p).ielts_band
    essays, prompts = pick_essays(n * len(runs), seed=2)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(n):
        for j, (name, run) in enumerate(runs.items()):
            k = i * len(runs) + j
            t0 = time.perf_counter()
            run(essays[k], prompts[k])
            times[name].append((time.perf_counter() - t0) * 1e3)
    # agreement on shared essays (untimed): every path gives the bare pipeline's half band
    agree = {name: sum(run(e, p) == bare(e, p) for e, p in zip(essays[:10], prompts[:10]))
             for name, run in list(runs.items())[1:]}
    for c in clients.values():
        c.close()
    base = statistics.median(times["bare pipeline in-process (EssayScorer.score)"])
    rows = []
    for name, values in times.items():
        med, p95 = stats(values)
        rows.append([name, f1(med), f1(p95), f"{med / base:.2f}x"])
    text = table(["path (explain=false)", "median ms", "p95 ms", "vs bare pipeline"], rows)
    for name in clients:
        diffs = [c - s for c, s in zip(times[f"Bento over HTTP, {name}"], server_total[name])]
        text += (f"\n\nBentoML + HTTP overhead, {name}: client latency minus the server's own `total_ms`, "
                 f"per request: median {statistics.median(diffs):.1f} ms, p95 {np.percentile(diffs, 95):.1f} ms.")
    text += "\n\nSame half band as the bare pipeline on 10 shared essays: " + ", ".join(
        f"{name}: {v}/10" for name, v in agree.items()) + "."
    return text


# --------------------------------------------------------------------------------------------------------
# 4 + 5. throughput sweep and memory
# --------------------------------------------------------------------------------------------------------
class MemorySampler:
    """Peak RSS / USS per process of some process trees, sampled every 0.5 s in a thread."""

    def __init__(self, roots: dict[str, int]):
        self.roots = roots
        self.peak: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self) -> dict[str, dict[str, float]]:
        import psutil

        out = {}
        for label, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                continue
            for p in procs:
                try:
                    info = p.memory_full_info()
                    cmd = " ".join(p.cmdline())
                except psutil.Error:
                    continue
                out[f"{label}: {describe(cmd)} (pid {p.pid})"] = {"rss": info.rss / 2**20, "uss": info.uss / 2**20}
        return out

    def _run(self):
        while not self._stop.wait(0.5):
            for name, m in self.snapshot().items():
                old = self.peak.setdefault(name, {"rss": 0.0, "uss": 0.0})
                old["rss"], old["uss"] = max(old["rss"], m["rss"]), max(old["uss"], m["uss"])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def describe(cmd: str) -> str:
    if "triton_python_backend_stub" in cmd:
        parts = cmd.split()
        model = next((Path(p).parts[-3] for p in parts if p.endswith("model.py")), "?")
        return f"python stub ({model})"
    if "tritonserver" in cmd:
        return "tritonserver"
    if "_bentoml_impl.worker" in cmd or "worker" in cmd and "bentoml" in cmd:
        return "Bento worker"
    if "bentoml" in cmd and "serve" in cmd:
        return "Bento supervisor"
    if "circus" in cmd or "arbiter" in cmd:
        return "Bento arbiter"
    return Path(cmd.split()[0]).name if cmd else "?"


def worker_processes(roots: dict[str, int]) -> list:
    """The Bento worker processes under the given server pids (they do the scoring)."""
    import psutil

    out = []
    for pid in roots.values():
        try:
            out += [p for p in psutil.Process(pid).children(recursive=True) if describe(" ".join(p.cmdline()))
                    == "Bento worker"]
        except psutil.Error:
            pass
    return out


def sweep(name: str, host: str, roots: dict[str, int], users: list[int], step_s: int) -> tuple[list[dict], dict]:
    """Locust at each user count; per step also the CPU seconds each Bento worker spent (how the load spread)."""
    from run import read_stats, run_locust, warm_up

    warm_up(host, 4)
    workers = worker_processes(roots)
    results = []
    with MemorySampler(roots) as mem:
        for n in users:
            before = [sum(w.cpu_times()[:2]) for w in workers]
            with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
                log(f"sweep {name}: {n} user(s), {step_s} s")
                s = read_stats(run_locust(host, n, n, f"{step_s}s", Path(tmp), ["score"]))
            cpu = [sum(w.cpu_times()[:2]) - b for w, b in zip(workers, before)]
            row = s["rows"].get("/score", {})
            results.append({"users": n, "essays_per_s": s["essays_per_s"], "p50": row.get("p50", 0.0),
                            "p95": row.get("p95", 0.0), "requests": row.get("requests", 0),
                            "failures": row.get("failures", 0), "worker_cpu_s": cpu})
    return results, mem.peak


def changes_tried(curves: dict[str, list[dict]], users: list[int]) -> str:
    """Each configuration of CONFIGURATIONS against the one before issue 13, at the latency goal's users (p95) and
    at the throughput goal's (essays/s), from this run's sweeps."""
    if BEFORE not in curves or LATENCY_USERS not in users or THROUGHPUT_USERS not in users:
        return f"(needs the configuration sweeps at {LATENCY_USERS} and {THROUGHPUT_USERS} users)"

    def at(name: str, n: int) -> dict:
        return next(r for r in curves[name] if r["users"] == n)

    base1, base8 = at(BEFORE, LATENCY_USERS), at(BEFORE, THROUGHPUT_USERS)
    rows = []
    for name, env in CONFIGURATIONS:
        one, eight = at(name, LATENCY_USERS), at(name, THROUGHPUT_USERS)
        settings = ", ".join(f"{k.removeprefix('ESSAYSCORE_').lower()}={'default' if v is None else v}"
                             for k, v in env.items())
        rows.append([name, settings, f"{one['p95']:.0f}", f"{one['p95'] / base1['p95']:.2f}x" if base1["p95"] else "-",
                     f"{eight['essays_per_s']:.2f}", f"{eight['essays_per_s'] / base8['essays_per_s']:.2f}x",
                     " + ".join(f"{c / max(1e-9, sum(eight['worker_cpu_s'])):.0%}" for c in eight["worker_cpu_s"])])
    met_throughput = at(SHIPPED, THROUGHPUT_USERS)["essays_per_s"] >= THROUGHPUT_GOAL
    met_latency = at(SHIPPED, LATENCY_USERS)["p95"] <= P95_GOAL_MS
    verdict = (f"{'meets' if met_throughput else 'misses'} the {THROUGHPUT_GOAL:g} essays/s goal at "
               f"{THROUGHPUT_USERS} users, and {'meets' if met_latency else 'misses'} the {P95_GOAL_MS:g} ms p95 "
               f"goal at {LATENCY_USERS} user{'s' if LATENCY_USERS != 1 else ''}")
    return (table(["configuration", "settings", f"{LATENCY_USERS} user p95 ms", "vs before",
                   f"{THROUGHPUT_USERS} users essays/s", "vs before",
                   f"share of CPU per worker at {THROUGHPUT_USERS} users"], rows)
            + f"\n\nThe shipped configuration {verdict} in this run. Every configuration scores identically "
            "(`tests/test_throughput_config.py`: the overlapped encoder gives the very results of the stages in turn; "
            "workers and connection handling do not touch scoring). `release_busy_connections`: the request guard "
            "answers `Connection: close` while its worker has other requests in flight, so a keep-alive client's "
            "next request reconnects and goes to whichever worker accepts first (the idle one); without it a "
            "connection stays with the worker that accepted it. `overlap_encoder`: the encoder runs on a thread of "
            "its own while the features run (ONNX Runtime releases the GIL).\n\n"
            "Options of the issue not shipped: a harper linter per thread (the grammar check is a quarter of the "
            "features stage, and with two single-threaded workers each worker's requests mostly wait for the CPU, "
            "not for the linter's lock); a spaCy pipeline trimmed further (`ner` is already excluded; the tagger, "
            "parser, attribute ruler and lemmatizer all feed features); BentoML adaptive batching and a feature "
            "process pool (at 8 users the two cores are already busy; batching saves padding, not CPU, on a CPU "
            "encoder). None of these was measured in this run.")


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in curves.items():
        u = [r["users"] for r in rows]
        a.plot(u, [r["essays_per_s"] for r in rows], marker="o", label=name)
        b.plot(u, [r["p95"] for r in rows], marker="o", label=name)
    a.axhline(THROUGHPUT_GOAL, ls="--", c="grey", lw=1, label=f"target ({THROUGHPUT_USERS} users)")
    b.axhline(P95_GOAL_MS, ls="--", c="grey", lw=1, label=f"target p95 ({LATENCY_USERS} user)")
    for ax, title, ylab in ((a, "Throughput", "essays scored / s"), (b, "/score p95 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["users"] for r in next(iter(curves.values()))])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent users (Locust, /score only)")
        ax.set_ylabel(ylab)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="artifact folder (default: the latest in artifacts/)")
    ap.add_argument("--n", type=int, default=30, help="essays per latency section")
    ap.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--step-s", type=int, default=15, help="seconds of Locust per user count")
    ap.add_argument("--quick", action="store_true", help="10 essays, 8 s steps, 1/4/16 users, no Triton (smoke run)")
    ap.add_argument("--no-triton", action="store_true", help="skip the Triton repository and server")
    ap.add_argument("--repo", type=Path, default=REPO / "out" / "bench-service-repository",
                    help="cpu Triton repository to build (or reuse when it holds this artifact's validated export)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.step_s, args.users, args.no_triton = 10, 8, [1, 4, 16], True

    from essayscore import artifacts
    from essayscore.essay_scorer import EssayScorer
    from training.repository import DEFAULT_CPU_VARIANT, build_repository

    artifact = (args.model or artifacts.resolve("latest", REPO / "artifacts")).resolve()
    os.environ["ESSAYSCORE_MODEL_TAG"] = str(artifact)  # before service.py reads the settings
    load_start = os.getloadavg()
    essays, prompts = pick_essays(args.n, seed=0)
    other, _ = pick_essays(args.n, seed=1)
    other = [e for e in other if e not in set(essays)]
    sections: list[str] = []

    log("in-process service")
    import service

    svc = service.EssayScoreService.inner()
    scorer = svc.api.runtime.scorer  # the shipped default: the artifact's int8 ONNX encoder
    assert svc.api.runtime.encoder_backend == "onnx-int8", svc.api.runtime.encoder_backend
    torch_scorer = EssayScorer(artifact, extractor=scorer.extractor)
    if not args.no_triton:  # reuses the artifact's validated int8 export
        log(f"cpu Triton repository ({DEFAULT_CPU_VARIANT} encoder) in {args.repo}")
        build_repository(artifact, args.repo, "cpu", cpu_variant=DEFAULT_CPU_VARIANT)
    for e, p in zip(essays[:2], prompts[:2]):  # lazy loads (SHAP, word lists) before timing
        svc._score_many([{"essay": e[::-1], "prompt": p, "explain": True, "include_issues": True}])

    log("stage breakdown")
    sections.append("## 1. Where the time goes: per-stage latency, in-process\n\nOne essay at a time through the "
                    "service's own code with `explain=true` and `include_issues=true` (so every stage runs), then "
                    "the response's JSON serialisation. The prompt-embedding cache starts empty.\n\n"
                    + stage_breakdown(svc, essays, prompts, other))
    log("encoder variants")
    sections.append("## 2. Acting on the biggest stage: the encoder\n\nThe encoder was the biggest stage "
                    "(143 ms of a 220 ms request in the first Triton breakdown, `docs/benchmarks.md`). Variants, "
                    "interleaved essay by essay on the same essays:\n\n"
                    + encoder_variants(torch_scorer, scorer, essays, prompts))

    curves: dict[str, list[dict]] = {}
    memory: dict[str, dict] = {}
    idle_memory: dict[str, dict] = {}
    from run import start_embedded, start_triton, warm_up

    def measure(name: str, url: str, roots: dict[str, int]) -> None:
        idle_memory.update(MemorySampler(roots).snapshot())
        log(f"sweep: {name}")
        curves[name], peak = sweep(name, url, roots, args.users, args.step_s)
        memory.update(peak)

    with ExitStack() as stack:
        log("starting the Bentos (embedded: int8 ONNX and PyTorch encoders) and, unless --no-triton, Triton + Bento")
        embedded_url = start_embedded(stack, artifact, ESSAYSCORE_RUNTIME="embedded")
        torch_url = start_embedded(stack, artifact, ESSAYSCORE_RUNTIME="embedded", ESSAYSCORE_EMBEDDED_ENCODER="torch")
        triton_bento = triton = None
        if not args.no_triton:
            triton_bento, triton = start_triton(stack, artifact, "grpc", args.repo)
        for url in filter(None, (embedded_url, torch_url, triton_bento)):
            warm_up(url, 4)
        log("paths")
        sections.append("## 3. Paths: bare pipeline, service logic, BentoML, Triton\n\nOne request at a time, "
                        "the paths taking turns request by request; each path scores its own "
                        f"{args.n} essays, new to every cache (same length band). The Triton-backed Bento calls "
                        "the cpu ensemble (the same int8 ONNX encoder, tl2cgen trees, python backend) over gRPC; "
                        "SHAP, warnings and formatting stay in the Bento.\n\n"
                        + paths(svc, scorer, {"embedded (int8 ONNX encoder, default)": embedded_url,
                                              "embedded (PyTorch encoder)": torch_url,
                                              "Triton": triton_bento}, triton and triton.grpc_url, args.n))
        if triton_bento:
            measure("Triton-backed Bento", triton_bento,
                    {"Triton-backed Bento": _server_pid(triton_bento), "Triton": triton.pid})
    # issue 13: what was tried to use both cores, each configuration in turn on the same machine in this run; the
    # first is the configuration before that work, the last the shipped default (the settings' own defaults)
    import serving_only  # tests/serving_only.py: these Bentos see only the serving set, as the image does

    for name, env in CONFIGURATIONS:
        with ExitStack() as stack:
            url = start_embedded(stack, artifact, ESSAYSCORE_RUNTIME="embedded", **serving_only.env(), **env)
            measure(name, url, {name: _server_pid(url)})

    png = args.out.with_name("performance_throughput.png")
    plot(curves, png)
    rows = []
    for name, values in curves.items():
        for r in values:
            rows.append([name, r["users"], f"{r['essays_per_s']:.2f}", f"{r['p50']:.0f}", f"{r['p95']:.0f}",
                         f"{r['failures']}/{r['requests']}",
                         " + ".join(f"{100 * c / args.step_s:.0f}%" for c in r["worker_cpu_s"])])
    sections.append("## 4. Throughput against concurrency\n\nLocust (`loadtests/locustfile.py --tags score`: "
                    f"/score only, half with prompts, 5% explain, 10% issues, 50-200 ms think time, one keep-alive "
                    f"connection per user), {args.step_s} s per step after 4 warm-up requests; Locust runs on the "
                    "same 2 cores. Essays/s counts successful /score responses; the last column is each Bento "
                    "worker's CPU time in the step over the step's length (100% = one core): how the load spread "
                    "over the workers.\n\n" + table(["server", "users", "essays/s", "/score p50 ms", "/score p95 ms",
                                                     "failures/requests", "CPU per Bento worker"], rows)
                    + f"\n\n![throughput and p95 against users]({png.name})")
    sections.append("## 5. What was tried to use both cores (issue 13)\n\n" + changes_tried(curves, args.users))
    mem_rows = [[name, f"{m['rss']:.0f}", f"{m['uss']:.0f}",
                 f"{memory.get(name, {}).get('rss', 0):.0f}", f"{memory.get(name, {}).get('uss', 0):.0f}"]
                for name, m in sorted(idle_memory.items())]
    shipped = [(idle_memory[n]["rss"], memory.get(n, {}).get("rss", 0.0)) for n in idle_memory
               if n.startswith(f"{SHIPPED}: Bento worker")]
    goal = ""
    if shipped:
        warm, peak = max(w for w, _ in shipped), max(p for _, p in shipped)
        over = peak - WORKER_RSS_GOAL_MB
        goal = (f"\n\nShipped configuration, per worker (goal: one worker <= {WORKER_RSS_GOAL_MB} MB RSS): "
                f"{warm:.0f} MB after warm-up ({'met' if warm <= WORKER_RSS_GOAL_MB else 'not met'}), {peak:.0f} MB "
                f"at the peak of the sweep ({'met' if over <= 0 else f'not met, {over:.0f} MB over'}). "
                "A worker grows as different essays arrive, mostly in the grammar checker (harper's linter, which "
                "levels off after a few hundred essays: docs/container.md).")
    sections.append("## 6. Memory per process\n\nRSS counts shared libraries in every process; USS is what the "
                    "process alone holds (what a second worker adds). Peak = highest 0.5 s sample during the "
                    "sweep (1-16 users, a few hundred different essays). The embedded Bentos of section 5's "
                    "configurations see only the serving set (no torch, transformers, pandas, scikit-learn: what "
                    "the image installs); the others run in the development environment, where transformers "
                    "imports torch (~190 MB) and XGBoost imports pandas and scikit-learn.\n\n"
                    + table(["process", "RSS MB after warm-up", "USS MB after warm-up", "peak RSS MB", "peak USS MB"],
                            mem_rows) + goal)
    sections.append("## 7. GPU\n\n" + gpu_section(scorer, essays, prompts))

    load_end = os.getloadavg()
    head = (f"# Service performance\n\nProduced by `.venv/bin/python benchmarks/bench_service.py"
            f"{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d')}: {machine()}. Artifact "
            f"`{artifact.name}`; {len(essays)} essays of 260-340 words with their prompts. Medians unless stated; "
            f"every comparison in a table was measured side by side in this run. Load average "
            f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end. Targets (issues 5 and 13): /score "
            f"p95 <= {P95_GOAL_MS:g} ms at {LATENCY_USERS} user, >= {THROUGHPUT_GOAL:g} essays/s at {THROUGHPUT_USERS} "
            "keep-alive users (loadtests/budget.toml, target).\n")
    args.out.write_text(head + "\n" + "\n\n".join(sections + other_benchmarks_sections(args.out)) + "\n")
    (args.out.with_suffix(".json")).write_text(json.dumps({"curves": curves, "memory_idle": idle_memory,
                                                          "memory_peak": memory}, indent=1))
    log(f"wrote {args.out} and {png}")
    return 0


def other_benchmarks_sections(path: Path) -> list[str]:
    """The sections of ``path`` that other benchmarks write (headings without a number, e.g. bench_backfill.py's
    "## Backfill on Ray"), kept as they are when this report is written anew."""
    if not path.exists():
        return []
    parts = ("\n" + path.read_text()).split("\n## ")[1:]
    return ["## " + p.rstrip("\n") for p in parts if not p[:1].isdigit()]


def _server_pid(url: str) -> int:
    """The pid of the `bentoml serve` process answering on url (the workers are its children)."""
    import psutil

    port = str(int(url.rsplit(":", 1)[1]))
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "serve" in cmd and port in cmd:
            return p.pid
    raise RuntimeError(f"no bentoml serve process for {url}")


def gpu_section(scorer, essays, prompts) -> str:
    import torch

    if not torch.cuda.is_available():
        return ("No GPU was used: torch sees no CUDA device on this machine. On a GPU machine this section times "
                "the encoder on CUDA (fp32 and fp16 autocast) against the CPU on the same essays.")
    from essayscore.torch_encoder import TorchEncoder

    enc = scorer.encoder
    gpu = TorchEncoder(enc.name, window=enc.window, stride=enc.stride, device="cuda")
    rows, ref = [], enc.encode(essays)
    for label, fn in (("cpu fp32", lambda e: enc.encode([e])), ("cuda fp32", lambda e: gpu.encode([e])),
                      ("cuda fp16 autocast", lambda e: _autocast(gpu, e))):
        fn(essays[0])
        ms = []
        for e in essays:
            t0 = time.perf_counter()
            fn(e)
            torch.cuda.synchronize()
            ms.append((time.perf_counter() - t0) * 1e3)
        rows.append([label, f1(stats(ms)[0]), f1(stats(ms)[1])])
    cos = float(np.min(np.sum(ref * gpu.encode(essays), 1) / np.linalg.norm(ref, axis=1)
                       / np.linalg.norm(gpu.encode(essays), axis=1)))
    return f"{torch.cuda.get_device_name(0)}\n\n" + table(["encoder, one essay", "median ms", "p95 ms"], rows) + \
        f"\n\nmin cosine cuda fp32 vs cpu: {cos:.6f}"


def _autocast(gpu, essay):
    import torch

    with torch.autocast("cuda", dtype=torch.float16):
        return gpu.encode([essay])


if __name__ == "__main__":
    sys.exit(main())
