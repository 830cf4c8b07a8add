"""The Triton ensemble (cpu profile, real tritonserver 2.51) against the in-process EssayScorer, on the same essays.

    python benchmarks/bench_triton.py [--model latest] [--n 40] [--repo DIR] [--cpu-variant fp32|int8]

Builds the cpu repository of the artifact (``training.repository``; into a temporary folder unless
``--repo``), starts the server, warms it up, then for every essay (~300 words, with its prompt) runs, one after
the other and one request at a time: the ensemble over HTTP, the ensemble over gRPC, ``EssayScorer`` with the
same ONNX encoder the server runs, and ``EssayScorer`` with the default PyTorch encoder. Interleaving keeps the
comparison fair on a noisy machine. Prints markdown tables to stdout:

1. end to end, client side: median / p95 / mean per path;
2. per step, server side, from Triton's statistics API (deltas over the measured requests; per request):
   queue, compute input, compute infer, compute output;
3. resident memory of the python backend stubs (one process per model instance).

Set ``OMP_WAIT_POLICY=PASSIVE`` (the default here, before anything loads libgomp): on a 2-core machine spinning
OpenMP threads of one process steal the cores the next step needs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
STEPS = ("preprocess", "encoder", "assemble", "band_regressor", "postprocess", "essay_scorer")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return f"{platform.node()}: {cpu}, {cores} usable cores, {platform.system()} {platform.release()}, no GPU"


def pick_essays(n: int, seed: int = 0) -> tuple[list[str], list[str | None]]:
    from essayscore.settings import get_settings
    from training.data import load_csv

    essays = load_csv(get_settings().data_path).essays
    words = essays["essay"].str.split().str.len()
    rows = essays[(words >= 260) & (words <= 340)].sample(n=n, random_state=seed)
    return rows["essay"].tolist(), rows["prompt"].tolist()


def model_stats(client) -> dict[str, dict[str, float]]:
    """Cumulative per-model counters: request count and nanoseconds per phase."""
    out = {}
    for entry in client.get_inference_statistics()["model_stats"]:
        s = entry["inference_stats"]
        out[entry["name"]] = {
            "count": float(s["success"].get("count", 0)),
            "success_ns": float(s["success"].get("ns", 0)),
            "queue_ns": float(s["queue"].get("ns", 0)),
            "input_ns": float(s["compute_input"].get("ns", 0)),
            "infer_ns": float(s["compute_infer"].get("ns", 0)),
            "output_ns": float(s["compute_output"].get("ns", 0)),
            "executions": float(entry.get("execution_count", 0)),
        }
    return out


def stub_memory(pgid: int) -> dict[str, float]:
    """RSS (MB) of the python backend stubs of a server's process group, by model."""
    rss: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        if not cmd or b"triton_python_backend_stub" not in cmd[0]:
            continue
        model = Path(cmd[1].decode()).parent.parent.name if len(cmd) > 1 else "?"
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
        rss[model] = rss.get(model, 0.0) + kb / 1024
    return rss


def summarize(ms: list[float]) -> tuple[float, float, float]:
    arr = np.asarray(ms)
    return float(np.median(arr)), float(np.percentile(arr, 95)), float(arr.mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="latest")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--repo", type=Path, default=None, help="build into / reuse this folder (default: temporary)")
    parser.add_argument("--cpu-variant", default="fp32", choices=("fp32", "int8"))
    parser.add_argument("--intra-op-threads", type=int, default=1, help="ONNX Runtime threads, server and in-process")
    args = parser.parse_args(argv)

    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from devtools.servers import TritonServer
    from devtools.triton_launcher import prepare_stub_env
    from essayscore import artifacts
    from essayscore import triton_io as io
    from essayscore.essay_scorer import EssayScorer
    from essayscore.onnx_encoder import OnnxEncoder
    from training.repository import build_repository

    artifact = artifacts.resolve(args.model, REPO_ROOT / "artifacts")
    essays, prompts = pick_essays(args.n)
    tmp = None
    if args.repo is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-triton-")
        repo = Path(tmp.name) / "model_repository"
    else:
        repo = args.repo
    t0 = time.perf_counter()
    build = build_repository(artifact, repo, "cpu", cpu_variant=args.cpu_variant,
                             intra_op_threads=args.intra_op_threads)
    build_s = time.perf_counter() - t0

    onnx_scorer = EssayScorer(artifact, encoder=OnnxEncoder.from_dir(repo / "encoder" / "1", variant=args.cpu_variant,
                                                                  intra_op_threads=args.intra_op_threads or None))
    torch_scorer = EssayScorer(artifact, extractor=onnx_scorer.extractor)
    for scorer in (onnx_scorer, torch_scorer):  # warm up lazy loading
        scorer.score(essays[:2], prompts[:2])

    server = TritonServer(repo, stub_python_env=prepare_stub_env())
    t0 = time.perf_counter()
    server.start(timeout_s=300)
    start_s = time.perf_counter() - t0
    http = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for essay, prompt in zip(essays[:3], prompts[:3]):
            io.score(http, essay, prompt)
            io.score(grpc, essay, prompt)
        memory = stub_memory(server.pid)
        before = model_stats(http)
        times: dict[str, list[float]] = {"triton HTTP": [], "triton gRPC": [], "in-process, ONNX encoder": [],
                                         "in-process, PyTorch encoder": []}
        bands_equal = 0
        for essay, prompt in zip(essays, prompts):
            t = time.perf_counter()
            got = io.score(http, essay, prompt)
            times["triton HTTP"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            io.score(grpc, essay, prompt)
            times["triton gRPC"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            ref = onnx_scorer.score([essay], [prompt])[0]
            times["in-process, ONNX encoder"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            torch_scorer.score([essay], [prompt])
            times["in-process, PyTorch encoder"].append((time.perf_counter() - t) * 1e3)
            bands_equal += got.ielts_band == ref.ielts_band
        after = model_stats(http)
    finally:
        http.close()
        grpc.close()
        server.stop()
        if tmp is not None:
            tmp.cleanup()

    n_words = [len(e.split()) for e in essays]
    print("# Triton ensemble vs in-process scoring\n")
    print(f"- machine: {machine()}")
    print(f"- artifact {build.artifact_version}; cpu profile, encoder {build.encoder_variant} ONNX on ONNX Runtime "
          f"(python backend, {args.intra_op_threads or 'all'} intra-op thread(s)), trees tl2cgen; "
          "tritonserver 2.51 (nvidia-pytriton), one instance per model")
    print(f"- {len(essays)} essays, {min(n_words)}-{max(n_words)} words (median {int(statistics.median(n_words))}),"
          f" all with their prompt; sequential, one request at a time; paths interleaved per essay")
    print(f"- repository build {build_s:.1f} s ({build.seconds}); server ready in {start_s:.1f} s; "
          f"same half band as in-process ONNX scoring: {bands_equal}/{len(essays)}\n")

    print("| path | median ms | p95 ms | mean ms |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        med, p95, mean = summarize(values)
        print(f"| {name} | {med:.1f} | {p95:.1f} | {mean:.1f} |")

    print("\n## Server side, per request (Triton statistics API, mean over the measured requests)\n")
    print("| model | requests | executions | queue ms | compute input ms | compute infer ms | compute output ms "
          "| total ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in STEPS:
        a, b = after.get(name), before.get(name, {})
        if a is None:
            continue
        d = {k: a[k] - b.get(k, 0.0) for k in a}
        n = max(d["count"], 1.0)
        ms = {key: value / n / 1e6 for key, value in d.items()}  # per request, in milliseconds
        print(f"| {name} | {int(d['count'])} | {int(d['executions'])} | {ms['queue_ns']:.2f} | {ms['input_ns']:.2f} "
              f"| {ms['infer_ns']:.2f} | {ms['output_ns']:.2f} | {ms['success_ns']:.2f} |")
    print("\n(essay_scorer's total is the server-side end to end of the ensemble; its compute columns are "
          "not meaningful for an ensemble)\n")

    print("## Python backend stubs, resident memory after warm-up\n")
    print("| model | RSS MB |")
    print("|---|---:|")
    for name, mb in sorted(memory.items()):
        print(f"| {name} | {mb:.0f} |")
    print(f"| **total** | {sum(memory.values()):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
