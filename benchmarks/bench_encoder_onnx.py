"""TorchEncoder runtimes side by side on CPU: PyTorch vs ONNX Runtime fp32 / int8 (/ fp16, not a CPU target).

    .venv/bin/python benchmarks/bench_encoder_onnx.py [--onnx-dir DIR] [--n 48] [--batch-size 16] [--repeats 3]

Without ``--onnx-dir`` the MiniLM encoder is exported to a temporary folder first (validated like the CLI).
Every runtime encodes the same N real essays (random_state=0) with window 256 / stride 192:

* essays/s: ``encode`` on all N essays at once (windows sorted by length, batches of --batch-size), median
  over --repeats runs after a warm-up;
* ms/essay: ``encode([essay])`` one essay at a time (median, p90), as a service scores a request;
* cosine: min over the N essays of cos(runtime embedding, PyTorch embedding).

Runtimes run in one process with the same thread count (the usable cores), interleaved (each repeat and each
single essay goes through every runtime in turn), so the numbers compare even when other processes load the
cores; the 1-minute load average before and after is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
import torch
from common import load_average_before  # benchmarks/ is on sys.path when run as a script

from essayscore.onnx_encoder import VARIANT_FILES, OnnxEncoder
from essayscore.settings import (
    get_settings,
    usable_cores,
)
from essayscore.torch_encoder import TorchEncoder
from training.onnx_export import cosine_rows, export_encoder


def measure(runtimes: list[tuple[str, object]], sample: list[str], repeats: int) -> list[dict]:
    """Interleaved: every repeat (and every single essay) runs each runtime in turn, so load that comes and goes
    (other processes on the cores) hits all runtimes alike instead of whichever happened to run then."""
    for _, encoder in runtimes:
        encoder.encode(sample[:8])  # warm-up (thread pools, allocator, ORT graph caches)
    results = [{"throughput": [], "latencies": [], "vectors": None} for _ in runtimes]
    for _ in range(repeats):
        for (_, encoder), r in zip(runtimes, results):
            t0 = time.perf_counter()
            r["vectors"] = encoder.encode(sample)
            r["throughput"].append(len(sample) / (time.perf_counter() - t0))
    for essay in sample:
        for (_, encoder), r in zip(runtimes, results):
            t0 = time.perf_counter()
            encoder.encode([essay])
            r["latencies"].append((time.perf_counter() - t0) * 1000)
    return [{"essays_s": statistics.median(r["throughput"]), "ms_median": statistics.median(r["latencies"]),
             "ms_p90": float(np.percentile(r["latencies"], 90)), "vectors": r["vectors"]} for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx-dir", type=Path, help="an export folder (python -m training.onnx_export --out)")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-fp16", action="store_true", help="fp16 on the CPU EP is slow and not a target")
    parser.add_argument("--data", type=Path, default=get_settings().data_path)
    args = parser.parse_args()

    load_before = load_average_before()
    sample = pd.read_csv(args.data)["essay"].sample(n=args.n, random_state=0).tolist()
    torch_encoder = TorchEncoder(args.encoder, window=args.window, stride=args.stride, batch_size=args.batch_size)
    n_windows = len(torch_encoder.windows(sample))

    temp = None
    onnx_dir = args.onnx_dir
    if onnx_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="bench-onnx-")
        onnx_dir = Path(temp.name)
        print(f"exporting {args.encoder} to {onnx_dir} ...", file=sys.stderr)
        export_encoder(torch_encoder, onnx_dir, validation_texts=sample[:8])

    variants = ["fp32", "int8"] + ([] if args.skip_fp16 else ["fp16"])
    runtimes = [("PyTorch fp32", torch_encoder)]
    for variant in variants:
        if (onnx_dir / VARIANT_FILES[variant]).is_file():
            label = f"ONNX {variant}" + (" (CPU EP; GPU variant, not a CPU target)" if variant == "fp16" else "")
            runtimes.append((label, OnnxEncoder.from_dir(onnx_dir, variant, batch_size=args.batch_size,
                                                         intra_op_threads=usable_cores())))

    print(f"measuring {', '.join(label for label, _ in runtimes)} (interleaved) ...", file=sys.stderr, flush=True)
    results = [(label, encoder, r) for (label, encoder), r in zip(runtimes, measure(runtimes, sample, args.repeats))]
    reference = results[0][2]["vectors"]

    print(f"\nEncoder `{args.encoder}` on CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), "
          f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads) vs ONNX Runtime "
          f"{__import__('onnxruntime').__version__} ({usable_cores()} intra-op threads); {len(sample)} essays "
          f"(random_state=0), window {args.window}, stride {args.stride}, {n_windows / len(sample):.2f} windows/essay, "
          f"batch {args.batch_size}; 1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| runtime | essays/s (batched) | speed-up | median ms/essay (single) | p90 ms/essay "
          "| min cosine vs PyTorch | file MB |")
    print("|---|---|---|---|---|---|---|")
    base = results[0][2]["essays_s"]
    for label, encoder, r in results:
        size = (encoder.onnx_path.stat().st_size / 1e6) if isinstance(encoder, OnnxEncoder) else float("nan")
        print(f"| {label} | {r['essays_s']:.2f} | {r['essays_s'] / base:.2f}x | {r['ms_median']:.0f} "
              f"| {r['ms_p90']:.0f} "
              f"| {cosine_rows(reference, r['vectors']).min():.5f} | {'-' if np.isnan(size) else f'{size:.0f}'} |")
    if temp is not None:
        temp.cleanup()


if __name__ == "__main__":
    main()
