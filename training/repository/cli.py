"""Command line of the repository generator, ``python -m training.repository`` (also ``essayscore
build-repository``): :func:`main` builds the cpu or gpu repository of an artifact, or with ``--check REPO`` only
checks an existing one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from training.repository.build import (
    CPU_VARIANTS,
    DEFAULT_CPU_VARIANT,
    build_repository,
)
from training.repository.lint import check_repository
from training.repository.specs import PROFILES


def main(argv: Sequence[str] | None = None) -> int:
    from essayscore.settings import get_settings

    settings = get_settings()
    import training.repository as package

    parser = argparse.ArgumentParser(prog="python -m training.repository", description=package.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="champion",
                        help="artifact: champion (default), latest, a version, a folder or a BentoML tag")
    parser.add_argument("--profile", choices=PROFILES, default="cpu")
    parser.add_argument("--out", type=Path, default=settings.model_repository)
    parser.add_argument("--cpu-variant", choices=CPU_VARIANTS, default=DEFAULT_CPU_VARIANT,
                        help="ONNX variant served by the cpu profile (int8 must pass the end-to-end QWK check)")
    parser.add_argument("--intra-op-threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads of the cpu encoder (0: usable cores). 1 is the default: "
                             "on the 2-core dev VM, 2 threads made the fp32 encoder 1.8x slower (400 vs 220 ms)")
    parser.add_argument("--band-limit", type=int, default=0, help="int8 QWK check on the first N test essays")
    parser.add_argument("--no-reuse-export", action="store_true", help="export the encoder even if already exported")
    parser.add_argument("--check", type=Path, default=None, metavar="REPO",
                        help="only check an existing repository (schema + cross-ensemble) and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args.check is not None:
        problems = check_repository(args.check)
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0

    from essayscore import artifacts

    artifact_dir = artifacts.resolve(args.model, settings.artifacts_dir)
    report = build_repository(artifact_dir, args.out, args.profile, cpu_variant=args.cpu_variant,
                              intra_op_threads=args.intra_op_threads, band_limit=args.band_limit,
                              reuse_export=not args.no_reuse_export)
    print(f"wrote the {report.profile} repository of {report.artifact_version} to {report.path} "
          f"(encoder {report.encoder_variant}, {'exported' if report.exported else 'export reused'}; "
          f"{report.seconds})")
    print(f"start it: python -m devtools.triton_launcher --model-repository {report.path}")
    return 0
