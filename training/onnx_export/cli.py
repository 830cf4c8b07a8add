"""Command line of the ONNX export, ``python -m training.onnx_export`` (also ``essayscore export-onnx``):
:func:`main` resolves and verifies the artifact, samples the validation essays, sets up the end-to-end band
check and runs :func:`training.onnx_export.export_encoder`; it exits 1 when any variant is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from essayscore.torch_encoder import TorchEncoder
from training.onnx_export.data import load_split, validation_sample
from training.onnx_export.graph import VARIANTS
from training.onnx_export.pipeline import export_encoder
from training.onnx_export.validate import (
    QWK_TOLERANCE,
    BandComparer,
    ExportValidationError,
)


def main(argv: Sequence[str] | None = None) -> int:
    import training.onnx_export as package

    parser = argparse.ArgumentParser(prog="python -m training.onnx_export", description=package.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="champion",
                        help="artifact: champion (default), latest, a version, a folder or a BentoML tag")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--n-validation", type=int, default=24, help="test-split essays for the cosine check")
    parser.add_argument("--band-split", default="test", help="split scored for the band change (QWK needs labels)")
    parser.add_argument("--band-limit", type=int, default=0, help="score only the first N essays of that split")
    parser.add_argument("--band-variants", nargs="*", default=list(VARIANTS), choices=VARIANTS,
                        help="variants that get the end-to-end band check (int8's acceptance)")
    parser.add_argument("--qwk-tolerance", type=float, default=QWK_TOLERANCE)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--all-or-nothing", action="store_true",
                        help="write nothing if any variant is refused (default: write the ones that pass)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from essayscore import artifacts
    from essayscore.settings import get_settings

    artifact = artifacts.Artifact.open(args.model, get_settings().artifacts_dir)
    artifact_dir, enc_cfg = artifact.dir, artifact.encoder_config
    encoder = TorchEncoder(enc_cfg["name"], window=enc_cfg["window"], stride=enc_cfg["stride"],
                           batch_size=args.batch_size)
    if encoder.model_id != enc_cfg["model_id"]:
        raise artifacts.ArtifactError(f"artifact encoder {enc_cfg['model_id']!r} != local {encoder.model_id!r}")

    rows = load_split(artifact_dir, args.band_split)
    validation = validation_sample(rows, args.n_validation)["essay"].tolist()
    band_rows = rows.head(args.band_limit) if args.band_limit > 0 else rows
    comparer = None
    checks = {}
    if args.band_variants:
        print(f"scoring {len(band_rows)} {args.band_split} essays with the PyTorch encoder ...", flush=True)
        comparer = BandComparer(artifact_dir, band_rows["essay"].tolist(), band_rows["prompt"].tolist(),
                                band_rows["band"].to_numpy())
        checks = {v: (lambda path, v=v: comparer.compare(path, args.qwk_tolerance)) for v in args.band_variants}

    extra = {"artifact": str(artifact_dir), "artifact_version": artifact_dir.name,
             "band_check": {"split": args.band_split, "n_essays": len(band_rows), "qwk_tolerance": args.qwk_tolerance,
                            "variants": list(args.band_variants)}}
    try:
        report = export_encoder(encoder, args.out, args.variants, validation, batch_size=args.batch_size,
                                extra_checks=checks, report_extra=extra, keep_passing=not args.all_or_nothing)
    except ExportValidationError as exc:
        print(json.dumps(exc.report, indent=2), file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    print(f"wrote {', '.join(report['files'])} to {args.out}")
    return 0
