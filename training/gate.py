"""The retraining gate: train a challenger, score it and the champion side by side on a pinned evaluation set,
promote only a challenger that is no worse.

    essayscore retrain [--data CSV] [--sources ielts,wi] [--wi JSONL] [--no-promote] [--report PATH]

* **Evaluation set.** The champion's own held-out test split (grouped by prompt and writer, never fitted on), the
  first time the gate runs; written once as ``<artifacts>/evaluation/eval-<sha12>.jsonl`` and pinned by its
  sha256 in ``<artifacts>/evaluation/pinned.json``. Every later gate scores on exactly that file (the hash is
  checked), and the challenger stores the hash in its config (``train.evaluation_set_sha256``). Training the
  challenger puts those essays in its test split whatever its data (``train.holdout_path``), and a challenger whose
  training or validation split still holds one is refused (its figures would be optimistic).
* **Side by side.** Both models run the in-process pipeline (``EmbeddedRuntime``, what the embedded Bento runs),
  one essay at a time, interleaved (champion, challenger, then the other order for the next essay), so machine
  load hits both alike; each call is timed for the latency figure.
* **Promotion rule** (:class:`GateConfig`, the margins): every guarded metric no worse than the champion's by more
  than its margin, AND the paired-bootstrap lower bound (one-sided 95%) on the challenger-minus-champion IELTS QWK
  above ``-qwk_margin``. Promotion moves the champion pointer atomically (``essayscore.champion``); the old
  champion stays for rollback.
* **Report.** Markdown (both models' figures, every check, the decision and its reason) plus the same as JSON,
  in ``<artifacts>/gate/`` unless ``--report`` says where.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from essayscore import champion
from essayscore.artifacts import Artifact, ArtifactError, Layout
from essayscore.bands import CEFR_LEVELS
from training.metrics import qwk

EVALUATION_DIR = "evaluation"
PINNED = "pinned.json"
EVAL_COLUMNS = ["essay_id", "source", "prompt", "essay", "band", "cefr"]


@dataclass(frozen=True)
class GateConfig:
    """Margins: how much worse than the champion the challenger may be on each guarded figure."""

    qwk_margin: float = 0.02  # IELTS QWK (the primary metric) and the bootstrap bound
    rmse_margin: float = 0.05  # IELTS RMSE, in bands
    cefr_qwk_margin: float = 0.02  # CEFR QWK over every evaluation essay
    source_qwk_margin: float = 0.03  # each source's own QWK (IELTS bands; W&I CEFR levels): smaller samples
    coverage_margin: float = 0.03  # interval coverage (share of IELTS labels inside the band interval)
    # p95 latency of the in-process pipeline: a shared 2-core machine moves p95 by tens of percent between runs,
    # so the bound is loose; it still catches a model that is slower by a whole stage
    latency_ratio: float = 1.5
    latency_slack_ms: float = 20.0
    bootstrap_samples: int = 1000
    bootstrap_confidence: float = 0.95  # one-sided lower bound
    seed: int = 0


# ----------------------------------------------------------------------------------------------- evaluation set
@dataclass(frozen=True)
class EvaluationSet:
    frame: pd.DataFrame
    sha256: str
    path: Path

    @property
    def ielts(self) -> np.ndarray:
        return (self.frame["source"] == "ielts").to_numpy()


def _canonical_bytes(frame: pd.DataFrame) -> bytes:
    rows = frame.sort_values("essay_id", kind="stable")[EVAL_COLUMNS]
    lines = [json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()},
                        ensure_ascii=False, sort_keys=True) for row in rows.to_dict("records")]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _read_set(path: Path) -> tuple[pd.DataFrame, str]:
    data = path.read_bytes()
    rows = [json.loads(line) for line in data.decode("utf-8").split("\n") if line.strip()]  # texts hold U+2028
    frame = pd.DataFrame(rows, columns=EVAL_COLUMNS)
    frame["band"] = pd.to_numeric(frame["band"], errors="coerce")
    return frame, hashlib.sha256(data).hexdigest()


def evaluation_set_of(artifact: Artifact) -> pd.DataFrame:
    """An artifact's held-out test split, as evaluation rows (re-loaded from its recorded data, checked)."""
    from training.sources import load_artifact_data

    essays, splits = load_artifact_data(artifact)
    test = essays[(splits["split"] == "test").to_numpy()]
    return pd.DataFrame({"essay_id": test["essay_id"].astype(str), "source": test["source"].astype(str),
                         "prompt": test["prompt"].fillna("").astype(str), "essay": test["essay"].astype(str),
                         "band": pd.to_numeric(test["band"], errors="coerce"),
                         "cefr": test["cefr"].astype(str)}).reset_index(drop=True)


def pinned_evaluation_set(artifacts_dir: Path, champion_model: Artifact | Path) -> EvaluationSet:
    """The pinned set (hash checked); the first call pins the champion's test split."""
    folder = Path(artifacts_dir) / EVALUATION_DIR
    pin = folder / PINNED
    if pin.is_file():
        meta = json.loads(pin.read_text())
        path = folder / meta["file"]
        if not path.is_file():
            raise ArtifactError(f"the pinned evaluation set {path} is missing ({pin}); restore it, or delete {pin} "
                                "to pin a new one (the figures of earlier gates then no longer compare)")
        frame, sha = _read_set(path)
        if sha != meta["sha256"]:
            raise ArtifactError(f"the evaluation set {path} has sha256 {sha[:12]}…, but {pin} pins "
                                f"{meta['sha256'][:12]}…: it was changed; refusing to gate on it")
        return EvaluationSet(frame, sha, path)
    champion_model = Artifact.of(champion_model)
    frame = evaluation_set_of(champion_model)
    data = _canonical_bytes(frame)
    sha = hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"eval-{sha[:12]}.jsonl"
    path.write_bytes(data)
    tmp = pin.with_suffix(".tmp")
    tmp.write_text(json.dumps({"file": path.name, "sha256": sha, "rows": len(frame),
                               "from": champion_model.version,
                               "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
    tmp.replace(pin)
    frame, sha = _read_set(path)
    return EvaluationSet(frame, sha, path)


# ------------------------------------------------------------------------------------------------- side by side
@dataclass
class Predictions:
    version: str
    band: np.ndarray
    raw: np.ndarray
    low: np.ndarray
    high: np.ndarray
    cefr: np.ndarray  # level index
    latency_ms: np.ndarray


def score_side_by_side(models: list[Artifact], evaluation: EvaluationSet, warmup: int = 3) -> list[Predictions]:
    """Every essay through each model's in-process pipeline, one at a time, interleaved."""
    from essayscore.runtimes import Item
    from essayscore.runtimes.embedded import EmbeddedRuntime

    runtimes = [EmbeddedRuntime.from_settings(m) for m in models]
    items = [Item(e, p or None) for e, p in zip(evaluation.frame["essay"], evaluation.frame["prompt"])]
    for runtime in runtimes:  # first calls load lazily (spaCy, ONNX sessions): not part of the latency
        runtime.score(items[:warmup])
    n = len(items)
    out = [{"band": np.empty(n), "raw": np.empty(n), "low": np.empty(n), "high": np.empty(n),
            "cefr": np.empty(n, dtype=np.int64), "latency_ms": np.empty(n)} for _ in runtimes]
    for i, item in enumerate(items):
        order = range(len(runtimes)) if i % 2 == 0 else reversed(range(len(runtimes)))
        for k in order:
            t0 = time.perf_counter()
            (result,) = runtimes[k].score([item]).results
            elapsed = (time.perf_counter() - t0) * 1e3
            if isinstance(result, Exception):
                raise RuntimeError(f"{runtimes[k].version} failed on evaluation essay "
                                   f"{evaluation.frame['essay_id'][i]}: {result}")
            row = out[k]
            row["band"][i], row["raw"][i] = result.ielts_band, result.ielts_raw
            row["low"][i], row["high"][i] = result.band_interval
            row["cefr"][i] = CEFR_LEVELS.index(result.cefr)
            row["latency_ms"][i] = elapsed
    return [Predictions(r.version, **o) for r, o in zip(runtimes, out)]


def _half(x: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x, dtype=np.float64) * 2).astype(np.int64)


def figures(pred: Predictions, evaluation: EvaluationSet) -> dict[str, float | None]:
    frame, ielts = evaluation.frame, evaluation.ielts
    y = frame["band"].to_numpy(dtype=np.float64)
    truth_cefr = np.array([CEFR_LEVELS.index(c) for c in frame["cefr"]])
    out: dict[str, float | None] = {"essays": float(len(frame)), "ielts_essays": float(ielts.sum())}
    if ielts.any():
        out["ielts_qwk"] = qwk(_half(y[ielts]), _half(pred.band[ielts]))
        out["ielts_rmse"] = float(np.sqrt(np.mean((pred.raw[ielts] - y[ielts]) ** 2)))
        out["interval_coverage"] = float(np.mean((y[ielts] >= pred.low[ielts]) & (y[ielts] <= pred.high[ielts])))
    out["cefr_qwk"] = qwk(truth_cefr, pred.cefr)
    for source in sorted(set(frame["source"])):
        rows = (frame["source"] == source).to_numpy()
        out[f"{source}_qwk"] = (qwk(_half(y[rows]), _half(pred.band[rows])) if source == "ielts"
                                else qwk(truth_cefr[rows], pred.cefr[rows]))
    out["latency_p50_ms"] = float(np.median(pred.latency_ms))
    out["latency_p95_ms"] = float(np.quantile(pred.latency_ms, 0.95))
    return out


def bootstrap_qwk_difference(champ: Predictions, chal: Predictions, evaluation: EvaluationSet,
                             cfg: GateConfig) -> dict[str, float]:
    """Paired bootstrap over the IELTS evaluation essays: challenger QWK minus champion QWK."""
    rows = np.flatnonzero(evaluation.ielts)
    y = _half(evaluation.frame["band"].to_numpy(dtype=np.float64)[rows])
    a, b = _half(champ.band[rows]), _half(chal.band[rows])
    rng = np.random.default_rng(cfg.seed)
    diffs = []
    for _ in range(cfg.bootstrap_samples):
        s = rng.integers(0, len(rows), len(rows))
        if len(set(y[s])) < 2:  # QWK is undefined on one class
            continue
        diffs.append(qwk(y[s], b[s]) - qwk(y[s], a[s]))
    d = np.array(diffs)
    return {"mean": float(d.mean()), "lower": float(np.quantile(d, 1 - cfg.bootstrap_confidence)),
            "samples": float(len(d)), "observed": qwk(y, b) - qwk(y, a)}


# ------------------------------------------------------------------------------------------------------ decision
@dataclass
class Check:
    name: str
    champion: float | None
    challenger: float | None
    limit: float | None
    ok: bool
    rule: str


@dataclass
class Decision:
    champion: str
    challenger: str
    promote: bool
    reason: str
    checks: list[Check]
    figures: dict[str, dict]
    bootstrap: dict[str, float]
    evaluation_set: dict
    config: dict
    promoted: bool = False
    report: str | None = None


def decide(champ_fig: dict, chal_fig: dict, boot: dict, cfg: GateConfig, overlap: int) -> tuple[list[Check], bool]:
    checks: list[Check] = []

    def at_least(name: str, margin: float) -> None:
        a, b = champ_fig.get(name), chal_fig.get(name)
        if a is None or b is None:
            return
        checks.append(Check(name, a, b, a - margin, b >= a - margin, f">= champion - {margin}"))

    def at_most(name: str, margin: float) -> None:
        a, b = champ_fig.get(name), chal_fig.get(name)
        if a is None or b is None:
            return
        checks.append(Check(name, a, b, a + margin, b <= a + margin, f"<= champion + {margin}"))

    at_least("ielts_qwk", cfg.qwk_margin)
    at_most("ielts_rmse", cfg.rmse_margin)
    at_least("cefr_qwk", cfg.cefr_qwk_margin)
    for name in sorted(k for k in champ_fig if k.endswith("_qwk") and k not in ("ielts_qwk", "cefr_qwk")):
        at_least(name, cfg.source_qwk_margin)
    at_least("interval_coverage", cfg.coverage_margin)
    a, b = champ_fig["latency_p95_ms"], chal_fig["latency_p95_ms"]
    limit = a * cfg.latency_ratio + cfg.latency_slack_ms
    checks.append(Check("latency_p95_ms", a, b, limit, b <= limit,
                        f"<= champion x {cfg.latency_ratio} + {cfg.latency_slack_ms} ms"))
    checks.append(Check("bootstrap_lower_ielts_qwk_diff", 0.0, boot["lower"], -cfg.qwk_margin,
                        boot["lower"] > -cfg.qwk_margin,
                        f"{cfg.bootstrap_confidence:.0%} lower bound > -{cfg.qwk_margin}"))
    checks.append(Check("evaluation_essays_in_challenger_training", 0.0, float(overlap), 0.0, overlap == 0, "== 0"))
    return checks, all(c.ok for c in checks)


def gate(champion_dir: Path, challenger_dir: Path, artifacts_dir: Path, cfg: GateConfig = GateConfig(),
         promote: bool = True, report: Path | None = None, evaluation: EvaluationSet | None = None) -> Decision:
    """Compares two artifacts on the pinned set (``evaluation``, when the caller already holds it), writes the
    report, promotes the challenger if it passes."""
    champion_model, challenger = Artifact(champion_dir), Artifact(challenger_dir)
    evaluation = evaluation or pinned_evaluation_set(artifacts_dir, champion_model)
    splits = pd.read_csv(challenger.path(Layout.SPLITS), dtype={"essay_id": str})
    fitted = set(splits.loc[splits["split"] != "test", "essay_id"])
    overlap = int(evaluation.frame["essay_id"].isin(fitted).sum())
    champ, chal = score_side_by_side([champion_model, challenger], evaluation)
    champ_fig, chal_fig = figures(champ, evaluation), figures(chal, evaluation)
    boot = bootstrap_qwk_difference(champ, chal, evaluation, cfg)
    checks, passed = decide(champ_fig, chal_fig, boot, cfg, overlap)
    failed = [c.name for c in checks if not c.ok]
    reason = ("every guarded figure is within its margin and the bootstrap bound holds" if passed
              else "refused: " + ", ".join(failed) + " outside the margin")
    decision = Decision(champ.version, chal.version, passed, reason, checks,
                        {"champion": champ_fig, "challenger": chal_fig}, boot,
                        {"sha256": evaluation.sha256, "file": str(evaluation.path), "rows": len(evaluation.frame)},
                        dataclasses.asdict(cfg))
    if passed and promote:
        champion.promote(challenger_dir, artifacts_dir, f"gate: {reason} (vs {champ.version})")
        decision.promoted = True
    path = report or Path(artifacts_dir) / "gate" / f"{chal.version}-vs-{champ.version}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(decision), encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(decision), indent=2, default=str))
    decision.report = str(path)
    return decision


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def render(d: Decision) -> str:
    verdict = ("PROMOTED" if d.promoted else "PASSED (not promoted: --no-promote)") if d.promote else "REFUSED"
    lines = [f"# Retraining gate: {d.challenger} vs champion {d.champion}", "",
             f"**Decision: {verdict}.** {d.reason}.", "",
             f"Evaluation set: {d.evaluation_set['rows']} essays, sha256 `{d.evaluation_set['sha256']}` "
             f"(`{Path(d.evaluation_set['file']).name}`). Both models scored side by side in one run, one essay "
             "at a time, interleaved, in-process (embedded runtime).", "",
             "| check | champion | challenger | limit | rule | ok |", "|---|---:|---:|---:|---|---|"]
    lines += [f"| {c.name} | {_fmt(c.champion)} | {_fmt(c.challenger)} | {_fmt(c.limit)} | {c.rule} | "
              f"{'yes' if c.ok else '**no**'} |" for c in d.checks]
    lines += ["", "| figure | champion | challenger |", "|---|---:|---:|"]
    lines += [f"| {k} | {_fmt(d.figures['champion'].get(k))} | {_fmt(v)} |" for k, v in d.figures["challenger"].items()]
    b = d.bootstrap
    lines += ["", f"Paired bootstrap of the IELTS QWK difference (challenger − champion), {int(b['samples'])} "
              f"resamples: observed {b['observed']:+.4f}, mean {b['mean']:+.4f}, one-sided "
              f"{d.config['bootstrap_confidence']:.0%} lower bound {b['lower']:+.4f}.", "",
              "Margins (training/gate.py GateConfig): " + ", ".join(f"{k}={v}" for k, v in d.config.items()), ""]
    return "\n".join(lines)


def retrain(train_cfg, artifacts_dir: Path, cfg: GateConfig = GateConfig(), promote: bool = True,
            report: Path | None = None) -> Decision:
    """Trains a challenger on ``train_cfg`` (its config records the pinned set's hash) and gates it."""
    from training.train import train

    champion_dir = champion.current_dir(artifacts_dir)
    evaluation = pinned_evaluation_set(artifacts_dir, champion_dir)
    challenger_dir = train(dataclasses.replace(train_cfg, evaluation_set_sha256=evaluation.sha256,
                                               holdout_path=str(evaluation.path)))
    return gate(champion_dir, challenger_dir, artifacts_dir, cfg, promote=promote, report=report,
                evaluation=evaluation)
