"""The data inventory: every human-labelled source a model can be trained on, its label type and its licence,
and one loader that puts the chosen sources into one frame with their original labels kept.

    essayscore train --sources ielts,wi      # both (the default)
    essayscore train --sources ielts         # commercial-safe: without the non-commercial W&I texts

Each row keeps its source's own label (``level_label``: an IELTS half band or a CEFR sub-level) and its ordinal
position on that source's own scale (``level_ordinal``); harmonising the scales is the model's job
(:mod:`training.fit`), not the loader's. IELTS rows also carry ``band`` and the table-derived ``cefr``; W&I rows
carry ``cefr`` (the level without its sub-level) and NaN ``band``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from essayscore.artifacts import Artifact, ArtifactError, Layout
from essayscore.settings import get_settings
from essayscore.text import words
from training.data import COLUMNS, LoadedEssays, load_csv, load_hub


@dataclass(frozen=True)
class Source:
    key: str  # what --sources takes
    name: str
    label_type: str  # "ielts_half_band" or "cefr_sublevel"
    levels: tuple[str, ...]  # the source's ordinal labels, lowest first
    licence: str
    commercial_use: bool
    citation: str
    grouping: str  # what splits are grouped by


IELTS_LEVELS = ("<4", "4", "4.5", "5", "5.5", "6", "6.5", "7", "7.5", "8", "8.5", "9")
WI_LEVELS = ("A1.i", "A1.ii", "A2.i", "A2.ii", "B1.i", "B1.ii", "B2.i", "B2.ii", "C1.i", "C1.ii", "C2.i", "C2.ii")

SOURCES: dict[str, Source] = {
    "ielts": Source(
        key="ielts", name="IELTS Writing Task 2 (chillies/IELTS-writing-task-2-evaluation, human bands)",
        label_type="ielts_half_band", levels=IELTS_LEVELS,
        licence="no licence stated by the dataset card (public Hugging Face dataset)", commercial_use=True,
        citation="huggingface.co/datasets/chillies/IELTS-writing-task-2-evaluation",
        grouping="prompt topic (Jaccard >= 0.6 clusters)"),
    "wi": Source(
        key="wi", name="Cambridge Write & Improve (W&I part of BEA-2019 W&I+LOCNESS v2.1), human CEFR levels",
        label_type="cefr_sublevel", levels=WI_LEVELS,
        licence="non-commercial research and educational use only", commercial_use=False,
        citation="Yannakoudakis et al. 2018, Developing an automated writing placement system for ESL learners, "
                 "Applied Measurement in Education",
        grouping="writer (userid)"),
}
DEFAULT_SOURCES = ("ielts", "wi")
SOURCE_COLUMNS = COLUMNS + ["source", "writer", "level_label", "level_ordinal", "n_words"]


def parse_sources(text: str | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_SOURCES
    keys = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in keys if k not in SOURCES]
    if unknown or not keys:
        raise ValueError(f"unknown source(s) {unknown}; choose from {sorted(SOURCES)}")
    if "ielts" not in keys:
        raise ValueError("the IELTS source anchors the band scale and cannot be left out")
    return keys


def wi_path() -> Path:
    return Path(get_settings().data_path).parent.parent / "wi-cefr" / "texts.jsonl"


def _ielts_rows(loaded: LoadedEssays) -> pd.DataFrame:
    frame = loaded.essays.copy()
    frame["source"] = "ielts"
    frame["writer"] = ""  # not known; IELTS splits are grouped by prompt topic
    frame["level_label"] = np.where(frame["band_censored"], "<4", frame["band"].map(lambda b: f"{b:g}"))
    frame["level_ordinal"] = frame["level_label"].map(IELTS_LEVELS.index).astype(np.int64)
    return frame


def load_wi(path: str | Path | None = None) -> LoadedEssays:
    """W&I texts: CEFR sub-level kept as the label (``C2+`` counts as C2.ii, the top of the scale)."""
    path = Path(path or wi_path())
    kept, rejected, seen = [], [], set()
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle):
            row = json.loads(line)
            label = str(row.get("cefr", "")).strip()
            label = "C2.ii" if label == "C2+" else label
            text = str(row.get("text") or "")
            reason = None
            if not words(text):
                reason = "empty essay"
            elif label not in WI_LEVELS:
                reason = "unparsable level"
            eid = hashlib.sha256(f"wi\x00{row.get('id')}".encode()).hexdigest()[:16]
            if reason is None and eid in seen:
                reason = "duplicate id"
            seen.add(eid)
            if reason:
                rejected.append({"row": line_no, "reason": reason, "band": label, "essay": text[:80]})
                continue
            kept.append({"essay_id": eid, "prompt": "", "essay": text, "band_label": "", "band": np.nan,
                         "band_censored": False, "cefr": label.split(".")[0], "origin": "wi",
                         "source": "wi", "writer": str(row.get("userid", "")), "level_label": label,
                         "level_ordinal": WI_LEVELS.index(label), "wi_id": str(row.get("id"))})
    essays = pd.DataFrame(kept)
    return LoadedEssays(essays, pd.DataFrame(rejected, columns=["row", "reason", "band", "essay"]))


def load_wi_edits(path: str | Path | None = None) -> dict[str, tuple[str, list]]:
    """essay_id -> (text, gold edits ``[[start, end, replacement], ...]``) for the error detector."""
    out = {}
    with open(Path(path or wi_path()), encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            eid = hashlib.sha256(f"wi\x00{row.get('id')}".encode()).hexdigest()[:16]
            # the first annotator's edits (the shared file has one annotator per text)
            edits = row["edits"][0][1] if row.get("edits") else []
            out[eid] = (row.get("text") or "", edits)
    return out


def load_sources(keys: tuple[str, ...] = DEFAULT_SOURCES, ielts_csv: str | None = None,
                 hub_dataset: str | None = None, wi_jsonl: str | None = None) -> LoadedEssays:
    """One frame of every chosen source, in a fixed order (IELTS rows first), plus every rejected row."""
    parts, rejected = [], []
    for key in keys:
        if key == "ielts":
            loaded = load_hub(hub_dataset) if hub_dataset else load_csv(ielts_csv or get_settings().data_path)
            frame = _ielts_rows(loaded)
        else:
            loaded = load_wi(wi_jsonl)
            frame = loaded.essays
        parts.append(frame)
        rejected.append(loaded.rejected.assign(source=key))
    essays = pd.concat(parts, ignore_index=True)
    essays["n_words"] = essays["essay"].map(lambda t: len(words(t))).astype(np.int64)
    return LoadedEssays(essays.reset_index(drop=True), pd.concat(rejected, ignore_index=True))


def inventory(essays: pd.DataFrame) -> list[dict]:
    """Source, size, label type and licence of what a model was trained on (artifact metadata, model card)."""
    out = []
    for key, part in essays.groupby("source", sort=False):
        spec = SOURCES[str(key)]
        out.append({**asdict(spec), "levels": list(spec.levels), "texts": int(len(part)),
                    "writers_or_groups": int(part["writer"].nunique()) if key == "wi" else None,
                    "label_counts": {str(k): int(v) for k, v in part["level_label"].value_counts().items()},
                    "median_words": float(part["n_words"].median())})
    return out


def licence_summary(keys) -> str:
    """The most restrictive licence a model trained on ``keys`` inherits."""
    restricted = [SOURCES[k] for k in keys if not SOURCES[k].commercial_use]
    if restricted:
        return "non-commercial only (inherited from: " + ", ".join(s.key for s in restricted) + ")"
    return "commercial use not excluded by any source; check each source's terms (" + \
        "; ".join(f"{k}: {SOURCES[k].licence}" for k in keys) + ")"


def load_artifact_data(artifact: Artifact | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data an artifact was trained on (re-loaded from its config) and its split manifest, checked to match."""
    artifact = artifact if isinstance(artifact, Artifact) else Artifact(Path(artifact), in_progress=True)
    train_cfg = artifact.config["train"]
    loaded = load_sources(tuple(train_cfg.get("sources") or ("ielts",)), ielts_csv=train_cfg.get("data_path"),
                          hub_dataset=train_cfg.get("hub_dataset"), wi_jsonl=train_cfg.get("wi_path"))
    splits = pd.read_csv(artifact.path(Layout.SPLITS), dtype={"essay_id": str})
    if list(splits["essay_id"]) != list(loaded.essays["essay_id"]):
        raise ArtifactError("the data no longer matches the artifact's split manifest")
    return loaded.essays, splits
