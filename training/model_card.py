"""The model card of an artifact: what it was trained on (every source and the licence it inherits), what it
outputs, how well it does per source, and where it should not be trusted.

Training writes one into every artifact (``Layout.MODEL_CARD``); ``essayscore model-card --model TAG --out
docs/model_card.md`` writes the shipped default's for the docs.
"""

from __future__ import annotations

from pathlib import Path

from essayscore.artifacts import Artifact


def _f(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render(artifact_dir: Path, version: str | None = None) -> str:
    artifact = Artifact(Path(artifact_dir), in_progress=True)  # training writes the card before the manifest
    version = version or artifact.version
    metrics, sources, config = artifact.metrics, artifact.sources, artifact.config
    assert sources is not None  # training records the sources before it writes the card
    test = metrics["splits"]["test"]
    h = metrics["harmonisation"]
    lines = [
        f"# Model card: essayscore {version}",
        "",
        "## What it does",
        "",
        "Given an English essay (and optionally its task prompt) it returns an IELTS band (0-9 in half bands; 3.5 "
        "reads \"4 or below\"), a CEFR level (A1-C2) with probabilities, a 90% band interval, the Task 2 "
        "under-length adjustment and an explanation of what drove the score. The band is a latent proficiency "
        "estimate in band units plus the IELTS rule for answers under 250 words; the CEFR level is the contract's "
        "band -> CEFR table (>=8.5 C2, >=7.0 C1, >=6.0 B2, >=5.0 B1, >=4.0 A2, else A1) applied to the "
        "proficiency before that length rule.",
        "",
        "## Training data and licence",
        "",
        f"**Licence inherited: {sources['licence']}.**",
        "",
        "| source | texts | label | licence | commercial use | citation |",
        "|---|---|---|---|---|---|",
    ]
    for s in sources["sources"]:
        lines.append(f"| {s['key']}: {s['name']} | {s['texts']} | {s['label_type']} | {s['licence']} | "
                     f"{'yes' if s['commercial_use'] else 'no'} | {s['citation']} |")
    lines += [
        "",
        "Splits are grouped by prompt topic (IELTS) and by writer (W&I): no prompt cluster or writer is in two "
        "splits. Original labels are kept beside the harmonised scale.",
        "",
        "## How the sources are put on one scale",
        "",
        "A cumulative-logit ordinal model of one latent proficiency: IELTS cut points fixed halfway between half "
        "bands; W&I's CEFR level boundaries anchored at the table's band boundaries, with the sub-level cut "
        "inside each level learned"
        + (f" (learned W&I cut points: {', '.join(_f(c, 2) for c in h['source_cuts']['wi'])})"
           if h["source_cuts"].get("wi") else "") + ".",
        f"Length enters once, bounded: {_f(h['length_weight'])} bands per log-word between 60 and 400 words; the "
        f"IELTS under-length rule takes up to {_f(-h['under_length_weight'], 2)} bands off an empty answer "
        "(linearly to 0 at 250 words).",
        "",
        "## Performance (this artifact's held-out test split)",
        "",
        "| source | n | figures |",
        "|---|---|---|",
    ]
    if "ielts_n" in test:
        lines.append(f"| IELTS | {test['ielts_n']} | QWK {_f(test['ielts_qwk'])}, RMSE {_f(test['ielts_rmse'])}, "
                     f"MAE {_f(test['ielts_mae'])}, within half a band {_f(test['ielts_within_half_band'])}, "
                     f"CEFR ECE {_f(test['ielts_cefr_ece'])}, 90% interval coverage "
                     f"{_f(test['ielts_interval_coverage'])} at mean width "
                     f"{_f(test['ielts_interval_mean_width'], 2)} |")
    if "wi_n" in test:
        lines.append(f"| W&I | {test['wi_n']} | CEFR QWK {_f(test['wi_cefr_qwk'])}, exact {_f(test['wi_cefr_exact'])}, "
                     f"within one level {_f(test['wi_cefr_within_one'])}, Spearman {_f(test['wi_spearman'])} |")
    if metrics.get("error_detector"):
        cv = metrics["error_detector"]["writer_grouped_cv"]
        lines += ["", f"Learned error detector (token level, writer-grouped CV): precision {_f(cv['precision'])}, "
                      f"recall {_f(cv['recall'])}, F0.5 {_f(cv['f0_5'])}."]
    lines += [
        "",
        "Cross-validated figures, transfer between sources and the length analysis: `docs/evaluation.md` "
        "(`essayscore evaluate`).",
        "",
        "## Limits: where not to trust it",
        "",
        "- It is trained on " + " and ".join(s["name"].split(" (")[0] + " texts" for s in sources["sources"])
        + " only. Other genres, other tasks and other scales (school grades, other exams) are outside what it has "
        "seen; the ranking transfers better than the absolute level.",
        "- Errors are about a band (RMSE above 1 on IELTS): use the band interval, not the point, for decisions "
        "about a single person. It is not fit for high-stakes decisions.",
        "- " + ("The learned error detector and the grammar checker see" if metrics.get("error_detector")
                else "The grammar checker sees") + " surface errors; argument quality, task achievement and "
        "coherence are only approximated by the signals in the explanation.",
        "- Texts under 150 words get a `too_short` warning, non-English ones `not_english` and answers to another "
        "prompt `off_topic`; their scores mean little. An essay sent without its prompt scores about 0.2 bands "
        "higher than with it (the W&I texts have no prompt).",
        f"- Encoder: `{config['encoder']['name']}`; embeddings are "
        + ("not part of the score (only the prompt-similarity signal)." if not config["train"].get("pca_components")
           else f"reduced to {config['train']['pca_components']} components in the score."),
        "",
    ]
    return "\n".join(lines)


def write(artifact_dir: Path, out: Path, version: str | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(artifact_dir, version))
    return out
