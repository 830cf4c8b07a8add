"""The essays an export is validated on: one split of an artifact's IELTS data (re-loaded from the artifact's
sources and checked against its ``splits.csv``), for the cosine sample and the end-to-end band / QWK check.
"""

from __future__ import annotations

from pathlib import Path


def load_split(artifact_dir: Path, split: str):
    """The artifact's IELTS essays of one split (the rows with a band to check QWK on; data re-loaded and
    checked against ``splits.csv``)."""
    from training.sources import load_artifact_data

    essays, splits = load_artifact_data(artifact_dir)
    keep = (splits["split"].to_numpy() == split) & (essays["source"].to_numpy() == "ielts")
    return essays[keep].reset_index(drop=True)


def validation_sample(rows, n: int):
    """A fixed (seeded) sample of up to ``n`` rows of a split: the essays the cosine check compares on."""
    return rows.sample(n=min(n, len(rows)), random_state=0)
