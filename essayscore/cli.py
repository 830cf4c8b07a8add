"""``essayscore``: train | evaluate | score | backfill | info | drift | export-onnx | build-repository | triton."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _train(args) -> None:
    from training.sources import parse_sources
    from training.train import TrainConfig, train

    cfg = TrainConfig(sources=parse_sources(args.sources), data_path=args.data, hub_dataset=args.hub,
                      wi_path=args.wi, encoder=args.encoder)
    directory = train(cfg, register=not args.no_register)
    _bootstrap_champion(directory)


def _bootstrap_champion(directory: Path) -> None:
    """The first model becomes the champion; later ones only through the gate (essayscore retrain) or promote."""
    from essayscore import champion
    from essayscore.settings import get_settings

    root = get_settings().artifacts_dir
    current, _ = champion.read(root)
    if current is None:
        entry = champion.promote(directory, root, "first model (there was no champion)")
        print(f"champion: {entry.version} (the first model; later ones go through `essayscore retrain`)")
    else:
        print(f"champion stays {current.version}: compare this model with `essayscore retrain` (trains and gates "
              f"a challenger) or make it the champion with `essayscore promote {directory.name}`")


def _retrain(args) -> None:
    from essayscore.settings import get_settings
    from training.gate import GateConfig, retrain
    from training.sources import parse_sources
    from training.train import TrainConfig

    cfg = TrainConfig(sources=parse_sources(args.sources), data_path=args.data, wi_path=args.wi)
    decision = retrain(cfg, get_settings().artifacts_dir, GateConfig(), promote=not args.no_promote,
                       report=Path(args.report) if args.report else None)
    print(Path(decision.report).read_text() if decision.report else decision.reason)
    print(f"report: {decision.report}")
    if not decision.promote:
        raise SystemExit(1)  # a refused challenger is the job's signal (a CronJob's failed run)


def _promote(args) -> None:
    from essayscore import champion
    from essayscore.artifacts import resolve
    from essayscore.settings import get_settings

    root = get_settings().artifacts_dir
    entry = champion.promote(resolve(args.model, root), root, args.reason)
    print(f"champion: {entry.version} (manifest sha256 {entry.manifest_sha256[:12]}…)")


def _rollback(args) -> None:
    from essayscore import champion
    from essayscore.settings import get_settings

    entry = champion.rollback(get_settings().artifacts_dir)
    print(f"champion: {entry.version} ({entry.reason})")


def _evaluate(args) -> None:
    from training.evaluate import evaluate

    evaluate(args.model, Path(args.out), folds=args.folds)


def _score(args) -> None:
    from essayscore.artifacts import Artifact
    from essayscore.batch import score_csv
    from essayscore.runtimes import RuntimeUnavailable, load_runtime
    from essayscore.settings import get_settings

    settings = get_settings()
    if args.resume:  # refuse an output written for another input before loading the model
        from essayscore.batch import ResumeError, resume_point

        try:
            resume_point(Path(args.input), Path(args.output))
        except ResumeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    # the service loads its runtime this way too (same encoder, same Triton settings: same bands as the API)
    runtime = load_runtime(args.runtime or settings.runtime, Artifact.open(args.model, settings.artifacts_dir))
    if not runtime.ready():
        raise RuntimeUnavailable(f"the {runtime.name} runtime is not ready (Triton at {settings.triton_url}?)")
    counts = score_csv(runtime, Path(args.input), Path(args.output), resume=args.resume)
    if args.resume:
        print(f"kept {counts['resumed']} complete rows already in {args.output}")
    print(f"scored {counts['rows'] - counts['errors']} of {counts['rows']} rows with model {runtime.version} "
          f"({runtime.name} runtime); {counts['errors']} rows have an error (see the 'error' column) -> "
          f"{args.output}")


def _backfill(args) -> None:
    from essayscore.backfill import BackfillError, backfill

    logging.getLogger("essayscore.backfill").setLevel(logging.INFO)  # one line per shard
    try:
        report = backfill(Path(args.input), Path(args.out), model=args.model, ray_address=args.ray_address,
                          actors=args.actors, shard_rows=args.shard_rows)
    except BackfillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"backfill with model {report.model_version}: {len(report.shards)} shards, {report.rows} rows "
          f"({report.errors} with an error); scored {report.scored} shards, skipped {report.skipped} already "
          f"complete -> {args.out} (manifest {report.manifest})")


def _model_card(args) -> None:
    from essayscore.artifacts import Artifact
    from essayscore.settings import get_settings
    from training import model_card

    artifact = Artifact.open(args.model, get_settings().artifacts_dir)
    print(f"model card -> {model_card.write(artifact.dir, Path(args.out))}")


def _grpc_serve(args) -> None:
    from essayscore.grpc_api.server import run

    run(args)


def _info(args) -> None:
    import json

    from essayscore.artifacts import Artifact
    from essayscore.settings import get_settings

    manifest = Artifact.open(args.model, get_settings().artifacts_dir).manifest
    keys = ("name", "version", "created", "encoder", "sources", "licence", "metrics")
    print(json.dumps({k: manifest[k] for k in keys if k in manifest}, indent=2))


def _drift(args) -> None:
    from essayscore.drift import DriftUsageError, run
    from essayscore.settings import get_settings

    try:
        status = run(Path(args.log), args.model, get_settings().artifacts_dir, threshold=args.threshold,
                     out=Path(args.out), min_rows=args.min_rows, feature_share=args.feature_share,
                     fallback_model="champion")  # the default of `score`
    except DriftUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if status:
        raise SystemExit(status)


# Commands implemented by another module's own CLI; ``essayscore NAME ARGS...`` hands ARGS to it unchanged.
DELEGATED = {
    "export-onnx": ("training.onnx_export", "export the encoder to validated fp32/fp16/int8 ONNX (see --help)"),
    "build-repository": ("training.repository", "write the Triton model repository (cpu or gpu profile)"),
    "triton": ("devtools.triton_launcher", "run a real tritonserver on a model repository (foreground)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essayscore", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model version from labelled essays")
    p.add_argument("--sources", default="ielts,wi",
                   help="labelled sources, comma-separated: ielts (IELTS bands), wi (Write & Improve CEFR, "
                        "non-commercial licence). Default: ielts,wi; 'ielts' trains without the non-commercial source")
    p.add_argument("--data", help="IELTS CSV (default: settings.data_path, the shared essays)")
    p.add_argument("--wi", help="W&I texts.jsonl (default: ../shared/data/wi-cefr/texts.jsonl)")
    p.add_argument("--hub", help="load a Hugging Face dataset instead, e.g. chillies/IELTS-writing-task-2-evaluation")
    p.add_argument("--encoder", help="encoder: 'minilm' (default) or a HF model id / path, e.g. roberta-large")
    p.add_argument("--no-register", action="store_true", help="do not register in the BentoML model store")
    p.set_defaults(func=_train)

    p = sub.add_parser("retrain", help="train a challenger and gate it against the champion (promoted if no worse)")
    p.add_argument("--sources", default="ielts,wi", help="labelled sources, as for train")
    p.add_argument("--data", help="IELTS CSV (default: settings.data_path)")
    p.add_argument("--wi", help="W&I texts.jsonl (default: ../shared/data/wi-cefr/texts.jsonl)")
    p.add_argument("--no-promote", action="store_true", help="compare and report only; the champion stays")
    p.add_argument("--report", help="markdown report path (default: <artifacts>/gate/<challenger>-vs-<champion>.md)")
    p.set_defaults(func=_retrain)

    p = sub.add_parser("promote", help="make a model version the champion (serving's default model)")
    p.add_argument("model", help="artifact version, 'latest', path or BentoML tag")
    p.add_argument("--reason", default="promoted by hand")
    p.set_defaults(func=_promote)

    p = sub.add_parser("rollback", help="make the previous champion the champion again")
    p.set_defaults(func=_rollback)

    p = sub.add_parser("evaluate", help="cross-validation, baselines, ablations -> markdown report + plots")
    p.add_argument("--model", default="champion", help="artifact version, path or BentoML tag (default: champion)")
    p.add_argument("--out", default="docs", help="report folder (default: docs)")
    p.add_argument("--folds", type=int, default=5)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("score", help="score a CSV with an 'essay' column (optional 'prompt', 'id'/'essay_id')")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--model", default="champion", help="artifact version, path or BentoML tag (default: champion)")
    p.add_argument("--runtime", choices=("embedded", "triton"),
                   help="where the model runs (default: settings.runtime); triton uses ESSAYSCORE_TRITON_URL and "
                        "ESSAYSCORE_TRITON_PROTOCOL")
    p.add_argument("--resume", action="store_true",
                   help="keep the complete rows already in OUTPUT (checked: the input's first rows, in order, by id "
                        "column or else by position), drop a row cut short, score only the rest (appended)")
    p.set_defaults(func=_score)

    p = sub.add_parser("backfill", help="score a CSV/Parquet file or folder into Parquet shards with Ray Data "
                                        "(resumable; docs/backfill.md)")
    p.add_argument("input", help="a .csv or .parquet file with an 'essay' column, or a folder of them")
    p.add_argument("--out", required=True, help="output folder: Parquet shards and manifest.<model version>.json")
    p.add_argument("--model", default="champion", help="artifact version, path or BentoML tag (default: champion)")
    p.add_argument("--ray-address", help="join this cluster (auto, HOST:PORT or ray://HOST:PORT); default: start a "
                                         "local cluster with the usable cores")
    p.add_argument("--actors", type=int, default=1, help="scoring actors, one CPU and one thread each (default 1)")
    p.add_argument("--shard-rows", type=int, help="input rows per output shard, the unit of resume (default: "
                                                  "ESSAYSCORE_BACKFILL_SHARD_ROWS, 256)")
    p.set_defaults(func=_backfill)

    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    p = sub.add_parser("model-card", help="write an artifact's model card (sources, licence, figures, limits)")
    p.add_argument("--model", default="champion")
    p.add_argument("--out", default="docs/model_card.md")
    p.set_defaults(func=_model_card)

    p = sub.add_parser("grpc-serve", help="serve the scoring API over gRPC (essayscore.v1.EssayScore + health)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--model", help="model tag or path (default: settings.model_tag, ESSAYSCORE_MODEL_TAG)")
    p.add_argument("--threads", type=int, help="scoring threads (default: the usable cores, at least 2)")
    p.add_argument("--max-concurrent", type=int, default=32, help="calls in flight before RESOURCE_EXHAUSTED")
    p.add_argument("--health-interval", type=float, default=2.0, help="seconds between readiness probes")
    p.set_defaults(func=_grpc_serve)

    p = sub.add_parser("info", help="print an artifact's manifest summary (verifies its hashes)")
    p.add_argument("--model", default="champion")
    p.set_defaults(func=_info)

    p = sub.add_parser("drift", help="PSI and KS of the service's request log against the training reference; "
                                     "exit 1 above the threshold (docs/monitoring.md)")
    p.add_argument("--log", required=True, help="request-log folder (the service's ESSAYSCORE_MONITOR_LOG_DIR)")
    p.add_argument("--model", help="artifact version, path or BentoML tag (default: the model the log's latest row "
                                   "names, when it resolves here; else the champion)")
    p.add_argument("--threshold", type=float, default=0.25,
                   help="PSI above this flags a quantity (default 0.25: < 0.1 stable, 0.1-0.25 moderate, "
                        "> 0.25 significant)")
    p.add_argument("--out", default="drift-report", help="report folder: drift.md, drift.png (default: drift-report)")
    p.add_argument("--feature-share", type=float, default=0.5,
                   help="drift when the band or CEFR moves, or more than this share of the monitored features does "
                        "(default 0.5: a few prompts move single features; 0: any one feature)")
    p.add_argument("--min-rows", type=int, default=100, help="refuse fewer log rows than this (default 100)")
    p.set_defaults(func=_drift)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return int(importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except Exception as exc:
        from essayscore.artifacts import ArtifactError
        from essayscore.runtimes import RuntimeUnavailable

        if args.verbose or not isinstance(exc, (ArtifactError, FileNotFoundError, RuntimeUnavailable)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
