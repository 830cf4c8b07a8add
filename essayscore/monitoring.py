"""Drift monitoring of live traffic against the training distribution: the statistics, the per-worker rolling
window, the append-only request log and the Prometheus export (see ``docs/monitoring.md``).

- :class:`Bins`: decile bins of one quantity, taken from the training data, with the training share of each bin
  (and of missing values). The service's histograms use the same edges, so PSI reads straight off ``/metrics``.
- :class:`DriftReference`: what training stored in the artifact (``Artifact.drift_reference``): the model's most
  important handcrafted features with their bins and a value sample (for the KS test), and the held-out
  distribution of the predicted half band and CEFR level. An older artifact has none: :class:`NoDriftReference`.
- :func:`psi`, :func:`ks_test`: the two drift statistics.
- :class:`RollingPsi`: PSI over the last N scored essays of one worker.
- :class:`RequestLog`: one JSON line per scored essay, one file per process (no interleaving), rotated by day
  and by size; never the essay text unless ``ESSAYSCORE_MONITOR_LOG_TEXT=true``.
- :class:`RequestMonitor`: what :class:`essayscore.scoring_api.ScoringApi` calls for every scored essay (both
  transports); the Bento adds Prometheus metrics with :meth:`RequestMonitor.export_to`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np

from essayscore.artifacts import Artifact, ArtifactError, Layout
from essayscore.bands import CEFR_LEVELS
from essayscore.result import EssayResult

log = logging.getLogger(__name__)

REFERENCE_FORMAT = 1
N_BINS = 10  # deciles
# Share floor inside PSI: a bin empty on one side would make its log ratio infinite.
PSI_FLOOR = 1e-4
# The usual PSI reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift (the default threshold).
PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25
BAND, CEFR = "ielts_band", "cefr"  # the two outputs monitored beside the features
METRIC_PREFIX = "essayscore"


class NoDriftReference(ArtifactError):
    """The artifact was trained before drift references were recorded (or by a newer format): retrain."""


def psi_status(value: float, threshold: float = PSI_SIGNIFICANT) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "significant" if value > threshold else "moderate" if value >= PSI_MODERATE else "stable"


# --------------------------------------------------------------------------------------------------
# Bins and statistics
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bins:
    """Right-closed bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)`` (Prometheus' ``le`` buckets) plus one bin
    for missing values. ``shares``: the reference's share of each finite bin; ``missing_share``: of NaN values."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    missing_share: float = 0.0

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray, n_bins: int = N_BINS) -> Bins:
        """Decile edges of the finite values (tied edges merged: a discrete quantity gets fewer bins) and the
        values' share in each bin."""
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if not len(finite):
            return cls((0.0,), (0.0, 0.0), 1.0 if len(values) else 0.0)
        edges = tuple(float(e) for e in np.unique(np.quantile(finite, np.arange(1, n_bins) / n_bins)))
        provisional = cls(edges, (0.0,) * (len(edges) + 1))
        shares = provisional.shares_of(values)
        return cls(edges, tuple(float(s) for s in shares[:-1]), float(shares[-1]))

    @property
    def n(self) -> int:
        """Number of bins, the missing bin included."""
        return len(self.edges) + 2

    @property
    def reference(self) -> np.ndarray:
        """The reference shares of every bin, the missing bin last."""
        return np.array([*self.shares, self.missing_share], dtype=np.float64)

    def index(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Bin of each value (missing values: the last bin)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        out = np.searchsorted(np.asarray(self.edges), values, side="left")  # edges[i-1] < v <= edges[i]
        return np.where(np.isfinite(values), out, self.n - 1)

    def counts(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        return np.bincount(self.index(values), minlength=self.n)

    def shares_of(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        counts = self.counts(values)
        return counts / max(1, int(counts.sum()))

    def labels(self) -> list[str]:
        """Readable bin names, e.g. ``<= 212``, ``(212, 260]``, ``> 480``, ``missing``."""
        e = [f"{x:.4g}" for x in self.edges]
        return [f"<= {e[0]}", *[f"({a}, {b}]" for a, b in zip(e, e[1:])], f"> {e[-1]}", "missing"]

    def to_dict(self) -> dict:
        return {"edges": list(self.edges), "shares": list(self.shares), "missing_share": self.missing_share}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bins:
        edges = tuple(float(e) for e in data["edges"])
        shares = tuple(float(s) for s in data["shares"])
        if len(shares) != len(edges) + 1 or list(edges) != sorted(set(edges)):
            raise ValueError(f"malformed bins: {len(edges)} edges (must increase strictly), {len(shares)} shares")
        return cls(edges, shares, float(data.get("missing_share", 0.0)))


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray,
        floor: float = PSI_FLOOR) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` of two share vectors over the same bins; shares
    below ``floor`` count as ``floor``. 0 for identical distributions, symmetric, never negative."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(reference: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value over the finite values (NaN, NaN when a side is
    empty). On a discrete quantity (counts, half bands) the p-value is conservative."""
    from scipy.stats import ks_2samp

    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(values, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return float("nan"), float("nan")
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


# --------------------------------------------------------------------------------------------------
# The reference stored in the artifact
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quantity:
    """One monitored quantity: a handcrafted feature, or an output (``ielts_band``, ``cefr`` as its level index
    A1=0 ... C2=5). ``sample``: reference values for the KS test; ``importance``: mean |SHAP| (features)."""

    name: str
    bins: Bins
    sample: np.ndarray
    importance: float | None = None


@dataclass(frozen=True)
class DriftReference:
    features: tuple[Quantity, ...]  # the monitored handcrafted features, most important first
    band: Quantity
    cefr: Quantity
    population: Mapping[str, Any]  # which training rows the reference describes

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        return (*self.features, self.band, self.cefr)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReference:
        if int(data.get("format", 0)) != REFERENCE_FORMAT:
            raise NoDriftReference(f"drift reference format {data.get('format')!r}; this code reads format "
                                   f"{REFERENCE_FORMAT}: retrain the model with this version")
        samples = data["samples"]

        def quantity(name: str, entry: Mapping[str, Any]) -> Quantity:
            importance = entry.get("importance")
            return Quantity(name, Bins.from_dict(entry), np.asarray(samples.get(name, []), dtype=np.float64),
                            None if importance is None else float(importance))

        features = tuple(quantity(name, data["features"][name]) for name in data["monitored"])
        return cls(features, quantity(BAND, data["outputs"][BAND]), quantity(CEFR, data["outputs"][CEFR]),
                   dict(data.get("population", {})))

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> DriftReference:
        """The artifact's reference; :class:`NoDriftReference` (an ArtifactError) when it has none."""
        data = artifact.drift_reference
        if data is None:
            raise NoDriftReference(f"artifact {artifact.version} has no drift reference ({Layout.DRIFT_REFERENCE}):"
                                   " it was trained before drift monitoring; retrain it to monitor drift")
        reference = cls.from_dict(data)
        unknown = {q.name for q in reference.features} - {entry["name"] for entry in artifact.registry}
        if unknown:
            raise NoDriftReference(f"artifact {artifact.version}'s drift reference monitors features its registry "
                                   f"lacks ({sorted(unknown)}): retrain")
        return reference


def cefr_index(level: str | None) -> float:
    return float(CEFR_LEVELS.index(level)) if level in CEFR_LEVELS else float("nan")


def monitored_values(reference: DriftReference, result: EssayResult,
                     feature_index: Mapping[str, int]) -> dict[str, float]:
    """The monitored quantities of one scored essay (NaN for a missing feature value)."""
    hand = np.asarray(result.handcrafted, dtype=np.float64).reshape(-1)  # empty from a client without the artifact
    values = {q.name: float(hand[j]) if (j := feature_index[q.name]) < len(hand) else float("nan")
              for q in reference.features}
    values[BAND] = float(result.ielts_band)
    values[CEFR] = cefr_index(result.cefr)
    return values


# --------------------------------------------------------------------------------------------------
# The rolling window (one per worker)
# --------------------------------------------------------------------------------------------------
class RollingPsi:
    """PSI of each monitored quantity over the last ``size`` essays this process scored. Bin counts are kept
    incrementally, so an update costs O(bins). ``None`` until the window holds ``min_rows`` essays (PSI over a
    handful of rows is noise). Thread-safe: the Bento answers requests on a thread pool."""

    def __init__(self, reference: DriftReference, size: int, min_rows: int):
        self.quantities = {q.name: q for q in reference.quantities}
        self.size, self.min_rows = max(1, size), max(1, min_rows)
        self._bins: dict[str, deque[int]] = {name: deque() for name in self.quantities}
        self._counts = {name: np.zeros(q.bins.n, dtype=np.int64) for name, q in self.quantities.items()}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(next(iter(self._bins.values()), ()))

    def add(self, values: Mapping[str, float]) -> dict[str, float] | None:
        with self._lock:
            for name, q in self.quantities.items():
                window, counts = self._bins[name], self._counts[name]
                b = int(q.bins.index([values.get(name, float("nan"))])[0])
                window.append(b)
                counts[b] += 1
                if len(window) > self.size:
                    counts[window.popleft()] -= 1
            if len(self) < self.min_rows:
                return None
            return {name: psi(q.bins.reference, self._counts[name] / len(self._bins[name]))
                    for name, q in self.quantities.items()}


# --------------------------------------------------------------------------------------------------
# The append-only request log
# --------------------------------------------------------------------------------------------------
LOG_PATTERN = "requests-*.jsonl"


class RequestLog:
    """One JSON line per scored essay in ``directory/requests-<UTC day>-<host>-<pid>-<seq>.jsonl``: each process
    writes its own files (workers never interleave), a new file each UTC day and whenever one would pass
    ``max_bytes``. Lines are written whole and flushed (a crash loses at most the line being written)."""

    def __init__(self, directory: Path, max_bytes: int = 64 << 20):
        self.directory = Path(directory)
        self.max_bytes = max(1, int(max_bytes))
        self.host = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"
        self._handle: IO[str] | None = None
        self._key: tuple[str, int] | None = None  # (day, pid) of the open file
        self._lock = threading.Lock()

    def _open(self, day: str, pid: int) -> None:
        if self._handle is not None:
            self._handle.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"requests-{day}-{self.host}-{pid}-"
        taken = [int(p.stem.rsplit("-", 1)[1]) for p in self.directory.glob(stem + "*.jsonl")
                 if p.stem.rsplit("-", 1)[1].isdigit()]
        # always a new file: a restarted worker may reuse a dead one's pid, whose files stay as they were
        self._key = (day, pid)
        self._handle = open(self.directory / f"{stem}{max(taken, default=-1) + 1:04d}.jsonl", "a", encoding="utf-8")

    def write(self, record: Mapping[str, Any], now: datetime | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        line = json.dumps(record, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
        size = len(line.encode("utf-8"))
        with self._lock:
            day, pid = now.strftime("%Y%m%d"), os.getpid()  # a forked process gets files of its own
            if self._handle is None or self._key != (day, pid) or (
                    self._handle.tell() > 0 and self._handle.tell() + size > self.max_bytes):
                self._open(day, pid)
            assert self._handle is not None
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def read_log(directory: Path) -> list[dict]:
    """Every row of every request-log file under ``directory`` (recursively), in time order; a line cut short by
    a crash is skipped."""
    rows = []
    for path in sorted(Path(directory).rglob(LOG_PATTERN)):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return sorted(rows, key=lambda r: str(r.get("time", "")))


# --------------------------------------------------------------------------------------------------
# Prometheus (the Bento passes bentoml.metrics, i.e. prometheus_client in multiprocess mode)
# --------------------------------------------------------------------------------------------------
_CREATED: dict[str, tuple[Any, dict]] = {}  # this process's metrics by name: a second ScoringApi reuses them


def _metric(factory: Any, name: str, **kwargs: Any) -> Any:
    """The metric ``name`` (made once per process: Prometheus refuses a second one). None when it exists with other
    buckets (a second model in one process, e.g. a test): that model's histogram is left out, with a warning."""
    if name not in _CREATED:
        _CREATED[name] = (factory(name=name, **kwargs), kwargs)
    metric, made_with = _CREATED[name]
    if made_with.get("buckets") != kwargs.get("buckets"):
        log.warning("metric %s already exists in this process with other buckets: not exported for this model", name)
        return None
    return metric


def _le(edge: float) -> str:
    return "+Inf" if edge == float("inf") else repr(float(edge))


class PrometheusDrift:
    """The drift metrics of one process:

    - ``essayscore_feature_<name>`` histogram per monitored feature, ``essayscore_predicted_half_band`` and
      ``essayscore_predicted_cefr_index`` (A1=0 ... C2=5): bucket edges = the reference's decile edges (finite
      values only; a missing feature value is not observed);
    - ``essayscore_drift_reference_share{feature, le}``: the training share of each of those buckets (``le`` as
      the histogram's, ``missing`` for missing values), so PSI needs nothing but ``/metrics``;
    - ``essayscore_drift_psi{feature}``: this worker's rolling PSI (NaN until its window holds enough essays).
      In multiprocess mode (the Bento) it is a ``liveall`` gauge: one series per live worker, labelled ``pid``.
    """

    def __init__(self, reference: DriftReference, metrics: Any):
        self.histograms = {
            q.name: _metric(metrics.Histogram, f"{METRIC_PREFIX}_feature_{q.name}", buckets=q.bins.edges,
                            documentation=f"Handcrafted feature {q.name} of scored essays; buckets: training deciles.")
            for q in reference.features}
        self.histograms[BAND] = _metric(
            metrics.Histogram, f"{METRIC_PREFIX}_predicted_half_band", buckets=reference.band.bins.edges,
            documentation="Predicted IELTS half band; buckets: deciles of held-out predictions at training.")
        self.histograms[CEFR] = _metric(
            metrics.Histogram, f"{METRIC_PREFIX}_predicted_cefr_index", buckets=reference.cefr.bins.edges,
            documentation="Predicted CEFR level as an index (A1=0 ... C2=5); buckets: held-out deciles at training.")
        self.psi = _metric(metrics.Gauge, f"{METRIC_PREFIX}_drift_psi", labelnames=["feature"],
                           multiprocess_mode="liveall",
                           documentation="Rolling PSI of this worker's recent essays against the training reference.")
        shares = _metric(metrics.Gauge, f"{METRIC_PREFIX}_drift_reference_share", labelnames=["feature", "le"],
                         multiprocess_mode="max",  # every worker writes the same values
                         documentation="Training share of each drift histogram bucket (le as the histogram's).")
        for q in reference.quantities:
            uppers = [*q.bins.edges, float("inf")]
            for upper, share in zip(uppers, q.bins.shares):
                shares.labels(feature=q.name, le=_le(upper)).set(share)
            shares.labels(feature=q.name, le="missing").set(q.bins.missing_share)
            self.psi.labels(feature=q.name).set(float("nan"))

    def observe(self, values: Mapping[str, float], rolling: Mapping[str, float] | None) -> None:
        for name, histogram in self.histograms.items():
            value = values.get(name, float("nan"))
            if histogram is not None and np.isfinite(value):
                histogram.observe(value)
        for name, value in (rolling or {}).items():
            self.psi.labels(feature=name).set(value)


# --------------------------------------------------------------------------------------------------
# The hook ScoringApi calls
# --------------------------------------------------------------------------------------------------
class RequestMonitor:
    """Records every scored essay: a request-log line (when ``monitor_log_dir`` is set), the rolling PSI window,
    and the Prometheus metrics (once :meth:`export_to` was called). An artifact without a drift reference is
    served with the outputs logged and no feature monitoring (a warning says so). Monitoring never fails a
    request: an error is logged and the essay's score is answered as usual."""

    def __init__(self, artifact: Artifact, settings: Any):
        self.model_version = artifact.version
        self.reference: DriftReference | None
        try:
            self.reference = DriftReference.from_artifact(artifact)
        except NoDriftReference as exc:
            log.warning("drift monitoring of features is off: %s", exc)
            self.reference = None
        self.feature_index = {entry["name"]: i for i, entry in enumerate(artifact.registry)}
        self.log_text = bool(settings.monitor_log_text)
        self.log = RequestLog(Path(settings.monitor_log_dir), settings.monitor_log_max_bytes) \
            if settings.monitor_log_dir else None
        self.window = RollingPsi(self.reference, settings.monitor_window, settings.monitor_min_rows) \
            if self.reference is not None else None
        self.metrics: PrometheusDrift | None = None
        self._failed_once = False

    def export_to(self, metrics: Any) -> None:
        """Publish the drift metrics with ``metrics`` (``bentoml.metrics`` in the Bento: prometheus_client)."""
        if self.reference is not None:
            self.metrics = PrometheusDrift(self.reference, metrics)

    def record(self, result: EssayResult, runtime: str, latency_ms: float, text: str | None = None) -> None:
        try:
            self._record(result, runtime, latency_ms, text)
        except Exception:  # monitoring (a full disk, a metric) must never fail a scored request
            if not self._failed_once:
                log.exception("drift monitoring failed; the request is answered regardless")
                self._failed_once = True

    def _record(self, result: EssayResult, runtime: str, latency_ms: float, text: str | None) -> None:
        values: dict[str, float] = {}
        rolling = None
        if self.reference is not None:
            values = monitored_values(self.reference, result, self.feature_index)
            rolling = self.window.add(values) if self.window is not None else None
            if self.metrics is not None:
                self.metrics.observe(values, rolling)
        if self.log is not None:
            features = {q.name: _finite_or_none(values[q.name]) for q in self.reference.features} \
                if self.reference is not None else {}
            row: dict[str, Any] = {
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "model_version": result.model_version or self.model_version, "runtime": runtime,
                "features": features, BAND: result.ielts_band, "ielts_raw": round(result.ielts_raw, 4),
                CEFR: result.cefr, "latency_ms": round(latency_ms, 2)}
            if self.log_text and text is not None:
                row["text"] = text
            self.log.write(row)
