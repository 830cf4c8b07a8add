"""``essayscore``: train | evaluate | score | info | export-onnx | build-repository | triton."""

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
    train(cfg, register=not args.no_register)


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

    p = sub.add_parser("evaluate", help="cross-validation, baselines, ablations -> markdown report + plots")
    p.add_argument("--model", default="latest", help="artifact version, path or BentoML tag (default: latest)")
    p.add_argument("--out", default="docs", help="report folder (default: docs)")
    p.add_argument("--folds", type=int, default=5)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("score", help="score a CSV with an 'essay' column (optional 'prompt', 'id'/'essay_id')")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--model", default="latest", help="artifact version, path or BentoML tag (default: latest)")
    p.add_argument("--runtime", choices=("embedded", "triton"),
                   help="where the model runs (default: settings.runtime); triton uses ESSAYSCORE_TRITON_URL and "
                        "ESSAYSCORE_TRITON_PROTOCOL")
    p.add_argument("--resume", action="store_true",
                   help="keep the complete rows already in OUTPUT (checked: the input's first rows, in order, by id "
                        "column or else by position), drop a row cut short, score only the rest (appended)")
    p.set_defaults(func=_score)

    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    p = sub.add_parser("model-card", help="write an artifact's model card (sources, licence, figures, limits)")
    p.add_argument("--model", default="latest")
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
    p.add_argument("--model", default="latest")
    p.set_defaults(func=_info)
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
