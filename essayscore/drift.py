"""``essayscore drift --log DIR [--model TAG] [--threshold 0.25] [--out REPORT_DIR] [--min-rows 100]``: the offline
drift check of the service's request log (:class:`essayscore.monitoring.RequestLog`) against the model's training
reference.

Per monitored feature, for the predicted half band and for the CEFR level: PSI over the reference's decile bins
and a two-sample KS test against the reference sample. Prints a table, writes ``drift.md`` with a plot of the bins
(``drift.png``), names every quantity whose PSI is above the threshold (the usual reading: < 0.1 stable, 0.1-0.25
moderate, > 0.25 significant; 0.25 is the default), and returns the exit status: 1 for drift, 0 otherwise, 2 on a
usage error (no log rows, too few rows, a model without a drift reference).

**Drift** is a PSI above the threshold for the predicted band or the CEFR level, or for more than
``feature_share`` (default half) of the monitored features. One or a few features alone do not make drift: text
features move with the prompt (contrast connectives, word rarity, readability), and traffic on a few prompts (a
class, an exam session; the shared IELTS test split is three prompts for 296 of its 317 essays) moves several of
them past 0.25 while the scores stay put (measured in docs/monitoring.md). ``feature_share=0`` makes any one
feature drift. The KS p-values are reported, not gated on: with hundreds of rows KS flags shifts too small to
matter, and PSI is the number the service exports.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from essayscore.artifacts import Artifact, ArtifactError
from essayscore.bands import CEFR_LEVELS
from essayscore.monitoring import (
    BAND,
    CEFR,
    PSI_SIGNIFICANT,
    DriftReference,
    Quantity,
    cefr_index,
    ks_test,
    psi,
    psi_status,
    read_log,
)

DEFAULT_MIN_ROWS = 100  # below this PSI over ten bins is mostly sampling noise
DEFAULT_FEATURE_SHARE = 0.5  # drift when more than this share of the monitored features moved


class DriftUsageError(RuntimeError):
    """The check cannot run as asked (exit status 2)."""


@dataclass(frozen=True)
class QuantityDrift:
    quantity: Quantity
    rows: int  # log rows holding a value (finite or missing)
    log_shares: np.ndarray  # per bin, the missing bin last
    psi: float
    ks_statistic: float
    ks_pvalue: float

    @property
    def name(self) -> str:
        return self.quantity.name


@dataclass(frozen=True)
class DriftReport:
    model_version: str
    log_versions: dict[str, int]  # model version -> rows in the log
    rows: int  # rows compared
    threshold: float
    population: dict
    results: tuple[QuantityDrift, ...]
    feature_share: float = DEFAULT_FEATURE_SHARE

    @property
    def moved(self) -> list[QuantityDrift]:
        """The quantities whose PSI is above the threshold, largest first."""
        return sorted((r for r in self.results if r.psi > self.threshold), key=lambda r: -r.psi)

    @property
    def features(self) -> list[QuantityDrift]:
        return [r for r in self.results if r.name not in (BAND, CEFR)]

    @property
    def moved_outputs(self) -> list[QuantityDrift]:
        return [r for r in self.moved if r.name in (BAND, CEFR)]

    @property
    def moved_feature_share(self) -> float:
        return sum(r.psi > self.threshold for r in self.features) / max(1, len(self.features))

    @property
    def drifted(self) -> bool:
        """A moved output, or more than ``feature_share`` of the monitored features moved."""
        return bool(self.moved_outputs) or (any(r.psi > self.threshold for r in self.features)
                                            and self.moved_feature_share > self.feature_share)


def _values(rows: list[dict], name: str) -> np.ndarray:
    if name == BAND:
        raw = [r.get(BAND) for r in rows]
    elif name == CEFR:
        return np.array([cefr_index(r.get(CEFR)) for r in rows], dtype=np.float64)
    else:
        raw = [r.get("features", {}).get(name) for r in rows]
    return np.array([np.nan if v is None else float(v) for v in raw], dtype=np.float64)


def _holds(row: dict, name: str) -> bool:
    return name in (row if name in (BAND, CEFR) else row.get("features", {}))


def compare(reference: DriftReference, rows: list[dict], threshold: float = PSI_SIGNIFICANT,
            model_version: str = "", log_versions: dict[str, int] | None = None,
            feature_share: float = DEFAULT_FEATURE_SHARE) -> DriftReport:
    """PSI and KS of every monitored quantity of ``rows`` (request-log rows) against ``reference``. A feature
    the rows do not hold (logged by another model) is left out. ``log_versions``: the whole log's model versions
    (default: those of ``rows``)."""
    results = []
    for q in reference.quantities:
        present = [r for r in rows if _holds(r, q.name)]
        if not present:
            continue
        values = _values(present, q.name)
        shares = q.bins.shares_of(values)
        ks_stat, ks_p = ks_test(q.sample, values)
        results.append(QuantityDrift(q, len(present), shares, psi(q.bins.reference, shares), ks_stat, ks_p))
    versions = log_versions or dict(Counter(str(r.get("model_version", "")) for r in rows))
    return DriftReport(model_version, versions, len(rows), threshold, dict(reference.population), tuple(results),
                       feature_share)


# --------------------------------------------------------------------------------------------------
# Output: the table, the markdown report, the plot
# --------------------------------------------------------------------------------------------------
def table(report: DriftReport) -> str:
    head = f"{'quantity':34} {'rows':>6} {'PSI':>7} {'KS D':>6} {'KS p':>9}  status"
    lines = [head, "-" * len(head)]
    for r in report.results:
        lines.append(f"{r.name:34} {r.rows:6d} {r.psi:7.3f} {r.ks_statistic:6.3f} {r.ks_pvalue:9.2g}  "
                     f"{psi_status(r.psi, report.threshold)}")
    return "\n".join(lines)


def verdict(report: DriftReport) -> str:
    t = f"{report.threshold:g}"
    features = report.features
    n_moved = sum(r.psi > report.threshold for r in features)
    moved = ", ".join(f"{r.name} (PSI {r.psi:.2f})" for r in report.moved)
    where = f"({report.rows} rows, model {report.model_version})"
    if report.drifted:
        return f"DRIFT: PSI above {t} for {moved}; {n_moved} of {len(features)} monitored features {where}"
    if not report.moved:
        return f"no drift: every PSI is at most {t} {where}"
    return (f"no drift: band and CEFR at most {t}; {n_moved} of {len(features)} monitored features above {t} "
            f"(drift needs more than {report.feature_share:.0%} of them): {moved} {where}")


def bin_labels(quantity: Quantity) -> list[str]:
    """Readable bin names; CEFR bins by the levels they hold (e.g. ``A1-B1``)."""
    if quantity.name != CEFR:
        return quantity.bins.labels()
    index = quantity.bins.index(np.arange(len(CEFR_LEVELS)))
    levels = [[lvl for lvl, k in zip(CEFR_LEVELS, index) if k == b] for b in range(quantity.bins.n - 1)]
    return [f"{held[0]}-{held[-1]}" if len(held) > 1 else held[0] if held else "-" for held in levels] + ["missing"]


def plot(report: DriftReport, path: Path) -> Path:
    """Reference against log share per bin, one panel per quantity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(report.results)
    cols = 3
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
    for ax, r in zip(axes.ravel(), report.results):
        bins = r.quantity.bins
        keep = np.flatnonzero((bins.reference > 0) | (r.log_shares > 0))  # empty bins on both sides say nothing
        labels = [bin_labels(r.quantity)[i] for i in keep]
        x = np.arange(len(keep))
        ax.bar(x - 0.2, bins.reference[keep], width=0.4, label="training reference", color="#4c72b0")
        ax.bar(x + 0.2, r.log_shares[keep], width=0.4, label="request log", color="#dd8452")
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{r.name}: PSI {r.psi:.2f}", fontsize=9,
                     color="#c44e52" if r.psi > report.threshold else "black")
        ax.set_ylabel("share", fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(report: DriftReport, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image = plot(report, out / "drift.png")
    versions = ", ".join(f"{v or '?'} ({n})" for v, n in report.log_versions.items())
    lines = [
        f"# Drift report: model {report.model_version}", "",
        f"**{verdict(report)}**", "",
        f"- Log rows compared: {report.rows} (model versions in the log: {versions})",
        f"- Reference: features from the {report.population.get('features', '?')} "
        f"({report.population.get('feature_rows', '?')} rows), outputs from the "
        f"{report.population.get('outputs', '?')} ({report.population.get('output_rows', '?')} rows)",
        f"- Threshold: PSI > {report.threshold:g} moves a quantity (convention: < 0.1 stable, 0.1-0.25 moderate, "
        f"> 0.25 significant); drift: the band or the CEFR level moved, or more than {report.feature_share:.0%} of "
        "the monitored features did. KS p-values are shown, not gated on.", "",
    ]
    if report.moved:
        lines += ["## Moved", ""]
        lines += [f"- **{r.name}**: PSI {r.psi:.3f}, KS D {r.ks_statistic:.3f} (p {r.ks_pvalue:.2g})"
                  for r in report.moved]
        lines += [""]
    lines += ["## All monitored quantities", "",
              "| quantity | importance (mean abs SHAP) | rows | PSI | KS D | KS p | status |",
              "|---|---|---|---|---|---|---|"]
    for r in report.results:
        importance = "" if r.quantity.importance is None else f"{r.quantity.importance:.3f}"
        lines.append(f"| {r.name} | {importance} | {r.rows} | {r.psi:.3f} | {r.ks_statistic:.3f} | "
                     f"{r.ks_pvalue:.2g} | {psi_status(r.psi, report.threshold)} |")
    lines += ["", f"![training reference against the request log, per bin]({image.name})", ""]
    path = out / "drift.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------
def _open_model(model: str | None, rows: list[dict], artifacts_dir: Path, fallback: str) -> Artifact:
    """``model``; else the model version of the log's latest row, when it resolves; else ``fallback``."""
    if model is not None:
        return Artifact.open(model, artifacts_dir)
    logged = str(rows[-1].get("model_version", "")) if rows else ""
    if logged:
        try:
            return Artifact.open(logged, artifacts_dir)
        except ArtifactError:
            print(f"the log's model {logged} does not resolve here; comparing with {fallback}", file=sys.stderr)
    return Artifact.open(fallback, artifacts_dir)


def run(log_dir: Path, model: str | None, artifacts_dir: Path, threshold: float = PSI_SIGNIFICANT,
        out: Path = Path("drift-report"), min_rows: int = DEFAULT_MIN_ROWS, fallback_model: str = "latest",
        feature_share: float = DEFAULT_FEATURE_SHARE) -> int:
    """The whole command; returns the exit status (raises DriftUsageError / ArtifactError for status 2)."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise DriftUsageError(f"no request log folder {log_dir} (the service writes it when "
                              "ESSAYSCORE_MONITOR_LOG_DIR is set)")
    rows = read_log(log_dir)
    if not rows:
        raise DriftUsageError(f"{log_dir} holds no request-log rows (requests-*.jsonl)")
    artifact = _open_model(model, rows, artifacts_dir, fallback_model)
    reference = DriftReference.from_artifact(artifact)  # NoDriftReference (an ArtifactError): status 2
    mine = [r for r in rows if r.get("model_version") == artifact.version]
    if not mine:
        print(f"warning: no log row was scored by {artifact.version} (the log holds "
              f"{sorted({str(r.get('model_version')) for r in rows})}); comparing all {len(rows)} rows with its "
              "reference: the feature figures hold, the band and CEFR figures compare two models", file=sys.stderr)
        mine = rows
    if len(mine) < min_rows:
        raise DriftUsageError(f"{len(mine)} log rows for model {artifact.version}, fewer than --min-rows {min_rows}: "
                              "PSI over so few rows is mostly noise")
    report = compare(reference, mine, threshold, artifact.version,
                     dict(Counter(str(r.get("model_version", "")) for r in rows)), feature_share)
    print(table(report))
    print(verdict(report))
    print(f"report: {write_report(report, out)}")
    return 1 if report.drifted else 0
