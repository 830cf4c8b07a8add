"""Measurement pieces shared by the benchmark scripts (import-safe: no thread or environment settings here)."""

from __future__ import annotations

import time


def feature_stage_seconds(fx, essays) -> tuple[list[float], list[float]]:
    """Seconds per essay of the two big feature stages: the spaCy parse and the grammar check. Give essays the
    checker has not seen (harper caches text)."""
    from essayscore.features.extractor import PARSE_LOCK
    from essayscore.text import flatten

    parse, check = [], []
    for e in essays:
        flat = flatten(e)
        t = time.perf_counter()
        with PARSE_LOCK:
            fx.nlp(flat)
        parse.append(time.perf_counter() - t)
        t = time.perf_counter()
        fx.checker.check(e)
        check.append(time.perf_counter() - t)
    return parse, check


def load_average_before(threshold: float = 0.5) -> float:
    """The 1-minute load average now, with a warning on stderr when other processes compete for the cores
    (OpenMP and ONNX Runtime timings are then inflated, often several times)."""
    import os
    import sys

    load = os.getloadavg()[0]
    if load > threshold:
        print(f"warning: 1-min load average is {load:.2f} on {os.cpu_count()} cores; other processes competing "
              "for the cores inflate these timings", file=sys.stderr)
    return load
