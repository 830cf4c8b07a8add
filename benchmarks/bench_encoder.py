"""MiniLM (PyTorch, CPU) encoder throughput and latency on real essays; prints a markdown table.

    .venv/bin/python benchmarks/bench_encoder.py [--n 64] [--windows 256 512] [--batch-size 16] [--repeats 3]

* essays/s: ``TorchEncoder.encode`` on all N essays at once (windows sorted by length, batches of --batch-size),
  median over --repeats runs after a warm-up.
* ms/essay (median, p90): ``TorchEncoder.encode([essay])`` one essay at a time, as a service would score it.
Stride is 3/4 of the window (the project default 192 for 256). Also reports how many shared essays exceed
the window (i.e. need more than one window).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
import torch
from common import load_average_before  # benchmarks/ is on sys.path when run as a script

from essayscore.settings import get_settings
from essayscore.torch_encoder import TorchEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--windows", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=get_settings().data_path)
    args = parser.parse_args()

    load_before = load_average_before()
    frame = pd.read_csv(args.data)
    sample = frame["essay"].sample(n=min(args.n, len(frame)), random_state=0).tolist()

    rows = []
    length_stats = None
    for window in args.windows:
        stride = window * 3 // 4
        enc = TorchEncoder(args.encoder, window=window, stride=stride, batch_size=args.batch_size)
        if length_stats is None:
            lengths = np.array([len(ids) + len(enc._prefix) + len(enc._suffix)
                                for ids in enc.text_token_ids(frame["essay"].tolist())])
            length_stats = lengths
        n_windows = len(enc.windows(sample))
        enc.encode(sample[:8])  # warm-up

        throughput = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            enc.encode(sample)
            throughput.append(len(sample) / (time.perf_counter() - t0))

        latencies = []
        for essay in sample:
            t0 = time.perf_counter()
            enc.encode([essay])
            latencies.append((time.perf_counter() - t0) * 1000)
        rows.append((window, stride, n_windows / len(sample), statistics.median(throughput),
                     statistics.median(latencies), float(np.percentile(latencies, 90))))

    print(f"\nEncoder `{args.encoder}`, PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
          f"{len(sample)} essays (random_state=0), batch {args.batch_size}; "
          f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| window | stride | windows/essay | essays/s (batched) | median ms/essay (single) | p90 ms/essay |")
    print("|---:|---:|---:|---:|---:|---:|")
    for window, stride, wpe, eps, med, p90 in rows:
        print(f"| {window} | {stride} | {wpe:.2f} | {eps:.1f} | {med:.0f} | {p90:.0f} |")

    if length_stats is not None:
        n = len(length_stats)
        print(f"\nShared essays: {n}; tokens incl. special tokens: median {np.median(length_stats):.0f}, "
              f"p90 {np.percentile(length_stats, 90):.0f}, max {length_stats.max()}")
        for limit in sorted(set(args.windows) | {256, 512}):
            over = int((length_stats > limit).sum())
            print(f"- > {limit} tokens: {over} ({100 * over / n:.1f}%)")


if __name__ == "__main__":
    main()
