"""Labelled essays: loading (shared CSV or the Hugging Face hub), band parsing, CEFR derivation, bad-row report."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from essayscore.bands import CENSORED_BAND_SURROGATE, band_to_cefr, parse_band
from essayscore.text import normalize, words

log = logging.getLogger(__name__)

HUB_DATASET = "chillies/IELTS-writing-task-2-evaluation"
COLUMNS = ["essay_id", "prompt", "essay", "band_label", "band", "band_censored", "cefr", "origin"]


@dataclass
class LoadedEssays:
    """Clean rows plus the rows that were rejected, each with the reason (nothing is dropped silently)."""

    essays: pd.DataFrame
    rejected: pd.DataFrame

    def summary(self) -> str:
        lines = [f"{len(self.essays)} essays loaded, {len(self.rejected)} rejected"]
        for reason, n in self.rejected["reason"].value_counts().items():
            lines.append(f"  rejected ({reason}): {n}")
        return "\n".join(lines)


def essay_id(prompt: str, essay: str) -> str:
    """Stable id from the normalised texts, so a row keeps its id (and split) across re-orderings of the file."""
    return hashlib.sha256(f"{normalize(prompt)}\x00{normalize(essay)}".encode()).hexdigest()[:16]


def prepare(raw: pd.DataFrame, origin_default: str = "unknown") -> LoadedEssays:
    """Parse bands, derive CEFR and reject bad rows (empty essay, unparsable band, duplicates) with a reason."""
    raw = raw.copy()
    for column in ("prompt", "essay"):
        raw[column] = raw[column].fillna("").astype(str) if column in raw else ""
    if "origin" not in raw:
        raw["origin"] = origin_default
    raw["band_label"] = raw["band"].astype(str).str.strip()

    kept, rejected, seen = [], [], set()
    for index, row in raw.iterrows():
        reason = None
        parsed = parse_band(row["band_label"])
        if not words(row["essay"]):
            reason = "empty essay"
        elif parsed is None:
            reason = "unparsable band"
        else:
            eid = essay_id(row["prompt"], row["essay"])
            if eid in seen:
                reason = "duplicate essay"
            seen.add(eid)
        if reason:
            rejected.append({"row": index, "reason": reason, "band": row["band_label"], "essay": row["essay"][:80]})
            continue
        assert parsed is not None  # else reason is set
        value, censored = parsed
        kept.append(
            {
                "essay_id": eid,
                "prompt": row["prompt"],
                "essay": row["essay"],
                "band_label": row["band_label"],
                "band": value,
                "band_censored": censored,
                "cefr": band_to_cefr(value),
                "origin": row["origin"],
            }
        )
    essays = pd.DataFrame(kept, columns=COLUMNS).reset_index(drop=True)
    rejected_df = pd.DataFrame(rejected, columns=["row", "reason", "band", "essay"])
    result = LoadedEssays(essays, rejected_df)
    log.info(result.summary())
    return result


def load_csv(path: str | Path) -> LoadedEssays:
    """The shared CSV (``prompt, essay, band, origin``; RFC 4180 quoting, essays span lines)."""
    return prepare(pd.read_csv(path, dtype=str, keep_default_na=False), origin_default=Path(path).stem)


def load_hub(repo: str = HUB_DATASET, split: str = "train", **kwargs) -> LoadedEssays:
    """The full public dataset from the Hugging Face hub (needs network), or a local folder in the hub's layout.

    Same columns as the shared CSV plus an LLM-written ``evaluation`` column that is not a human label and is
    dropped; band values carry stray whitespace, which :func:`prepare` strips.
    """
    from datasets import load_dataset

    frame = load_dataset(repo, split=split, **kwargs).to_pandas()
    frame = frame.drop(columns=[c for c in ("evaluation",) if c in frame])
    return prepare(frame, origin_default=f"hub-{split}")


def band_array(essays: pd.DataFrame) -> np.ndarray:
    return essays["band"].to_numpy(dtype=np.float32)


__all__ = ["CENSORED_BAND_SURROGATE", "HUB_DATASET", "LoadedEssays", "band_array", "essay_id", "load_csv",
           "load_hub", "prepare"]
