"""Compiled trees (Treelite + TL2cgen) vs XGBoost at production width (450 features).

    python benchmarks/bench_trees.py [--quick] [--threads 2] [--omp-wait-policy passive|active|unset]

Prints markdown tables to stdout:
1. compile time vs tree count / depth (gcc -O3 default, and -O1), library size, max |diff| vs XGBoost;
2. prediction latency per call for batch sizes 1 / 32 / 1000: tl2cgen, xgboost ``inplace_predict`` and xgboost
   ``pred_contribs`` (TreeSHAP, what the explanations need; includes the DMatrix construction it requires).

OpenMP wait policy: xgboost, treelite and tl2cgen each bundle their own libgomp. On the 2-core dev machine the
default (spinning) wait policy turns multi-threaded calls into multi-millisecond stalls (e.g. xgboost SHAP for
one row: ~28 ms vs ~0.3 ms with OMP_WAIT_POLICY=PASSIVE). The policy must be set before libgomp loads, so it is
applied here before importing xgboost; default ``passive`` (the recommended serving setting).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _early_wait_policy(argv: list[str]) -> str:
    policy = "passive"
    for i, a in enumerate(argv):
        if a == "--omp-wait-policy" and i + 1 < len(argv):
            policy = argv[i + 1]
        elif a.startswith("--omp-wait-policy="):
            policy = a.split("=", 1)[1]
    if policy != "unset":
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
    return policy


_early_wait_policy(sys.argv[1:])

import numpy as np
import xgboost as xgb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from essayscore.compiled_trees import CompiledTrees, compile_xgboost

N_FEATURES = 450


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    X[:, :60] = rng.gamma(2.0, 2.0, size=(n, 60))
    X[rng.random((n, N_FEATURES)) < 0.03] = np.nan
    w = rng.normal(size=N_FEATURES) * (rng.random(N_FEATURES) < 0.1)
    y = np.nan_to_num(X) @ w + rng.normal(scale=0.5, size=n)
    return X, y.astype(np.float32)


def timeit(fn, min_time_s: float = 0.5, max_reps: int = 2000) -> float:
    """Median seconds per call."""
    fn()  # warm-up
    times: list[float] = []
    t_end = time.perf_counter() + min_time_s
    while (time.perf_counter() < t_end or len(times) < 5) and len(times) < max_reps:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt_us(s: float) -> str:
    us = s * 1e6
    return f"{us:,.0f} µs" if us < 10_000 else f"{us / 1000:,.1f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer configurations")
    ap.add_argument("--threads", type=int, default=2, help="threads for compilation and batch prediction")
    ap.add_argument(
        "--omp-wait-policy", choices=["passive", "active", "unset"], default="passive",
        help="OMP_WAIT_POLICY for this process (set before xgboost/tl2cgen load libgomp)",
    )
    args = ap.parse_args()

    X, y = make_data(3000)
    X_test, _ = make_data(1000, seed=1)
    configs = [(100, 4), (300, 4), (100, 6), (300, 6)] if not args.quick else [(100, 4), (300, 6)]
    batches = [1, 32, 1000]

    compile_rows = []
    latency_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n_trees, depth in configs:
            model = xgb.XGBRegressor(
                n_estimators=n_trees, max_depth=depth, learning_rate=0.05, max_bin=64, n_jobs=args.threads,
                random_state=0,
            ).fit(X, y)
            model_file = tmp / f"m{n_trees}_{depth}.ubj"
            model.save_model(model_file)
            booster = xgb.Booster(model_file=str(model_file))
            booster.set_param({"nthread": args.threads})
            booster1 = xgb.Booster(model_file=str(model_file))
            booster1.set_param({"nthread": 1})
            expected = booster.inplace_predict(X_test)

            variants = [("-O3 (default)", None)] + ([("-O1", ["-O1"])] if not args.quick else [])
            lib_o3 = None
            for label, opts in variants:
                name = f"m{n_trees}_{depth}_{'o1' if opts else 'o3'}"
                t0 = time.perf_counter()
                lib = compile_xgboost(model_file, tmp, name, nthread=args.threads, options=opts)
                wall = time.perf_counter() - t0
                ct = CompiledTrees(lib, nthread=1)
                diff = float(np.max(np.abs(ct.predict(X_test) - expected)))
                compile_rows.append(
                    f"| {n_trees} | {depth} | {label} | {ct.meta['compile_s']:.1f} s | {wall:.1f} s | "
                    f"{lib.stat().st_size / 1e6:.1f} MB | {diff:.1e} |"
                )
                if opts is None:
                    lib_o3 = lib

            ct1 = CompiledTrees(lib_o3, nthread=1)
            ctn = CompiledTrees(lib_o3, nthread=args.threads)
            for b in batches:
                xb = np.ascontiguousarray(X_test[:b])
                # timeit() calls each lambda right here; the defaults bind this iteration's objects anyway
                t_tl1 = timeit(lambda ct1=ct1, xb=xb: ct1.predict(xb))
                t_tln = timeit(lambda ctn=ctn, xb=xb: ctn.predict(xb)) if b > 1 else t_tl1
                t_xgb1 = timeit(lambda booster1=booster1, xb=xb: booster1.inplace_predict(xb))
                t_xgb = timeit(lambda booster=booster, xb=xb: booster.inplace_predict(xb))
                t_shap = timeit(
                    lambda booster=booster, xb=xb: booster.predict(
                        xgb.DMatrix(xb, nthread=args.threads), pred_contribs=True
                    ),
                    max_reps=200,
                )
                latency_rows.append(
                    f"| {n_trees}×d{depth} | {b} | {fmt_us(t_tl1)} | {fmt_us(t_tln)} | {fmt_us(t_xgb1)} | "
                    f"{fmt_us(t_xgb)} | {fmt_us(t_shap)} | {min(t_xgb1, t_xgb) / min(t_tl1, t_tln):.1f}× |"
                )

    print(f"## Compile time (XGBoost regressor, {N_FEATURES} features, gcc, nthread={args.threads})\n")
    print("| trees | depth | flags | compile (tl2cgen) | wall incl. load | .so size | max abs diff vs xgboost |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    print("\n".join(compile_rows))
    print(
        f"\n## Prediction latency per call (median; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})\n"
    )
    n = args.threads
    print(
        f"| model | batch | tl2cgen 1 thr | tl2cgen {n} thr | xgb inplace 1 thr | xgb inplace {n} thr | "
        f"xgb pred_contribs (SHAP) {n} thr | best xgb / best tl2cgen |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(latency_rows))
    print(
        f"\nmachine: {os.cpu_count()} cores; xgboost {xgb.__version__}; numpy {np.__version__}; "
        f"python {sys.version.split()[0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
