"""A tiny, randomly initialised RoBERTa (model + byte-level BPE tokenizer) built offline for tests.

No RoBERTa weights exist on this machine, but production runs ``roberta-large``; this gives the RoBERTa code
path (no token_type_ids, ``<s> ... </s>`` template, position ids offset by the padding index, 2 positions
reserved) something real to run on. Reused by the ONNX export tests.

    from tiny_roberta import build_tiny_roberta
    folder = build_tiny_roberta(tmp_path / "tiny-roberta")   # -> str, loadable with AutoModel/AutoTokenizer
"""

from __future__ import annotations

import csv
import random
import tempfile
from pathlib import Path

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MAX_POSITIONS = 130  # RoBERTa reserves pad_token_id + 1 = 2 positions -> 128 usable tokens per window
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ielts-task2" / "essays.csv"

_SUBJECTS = ["Governments", "Many people", "Young adults", "Some teachers", "Modern cities", "Employers", "Parents",
             "Online courses", "Public transport", "Technology companies", "Older generations", "Students"]
_VERBS = ["should invest in", "often underestimate", "benefit greatly from", "are responsible for",
          "cannot ignore", "have changed", "argue against", "depend heavily on", "ought to regulate"]
_OBJECTS = ["higher education", "renewable energy", "traditional values", "international tourism",
            "the environment", "social media", "working from home", "healthy lifestyles", "local communities"]
_TAILS = ["in the long term.", "because it affects everyone.", "although this is debatable.",
          "according to recent research.", "; however, opinions differ.", "and I wholeheartedly agree."]


def training_texts(n_essays: int = 300) -> list[str]:
    """A few hundred essays from the shared data, or generated sentences if the data is absent."""
    if DATA.is_file():
        with open(DATA, newline="", encoding="utf-8") as handle:
            texts = [row["essay"] for _, row in zip(range(n_essays), csv.DictReader(handle))]
        if texts:
            return texts
    rng = random.Random(0)
    return [
        " ".join(f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
                 for _ in range(8))
        for _ in range(400)
    ]


def build_tiny_roberta(path: str | Path, vocab_size: int = 1000, hidden: int = 32, layers: int = 2,
                       heads: int = 2, seed: int = 0) -> str:
    """Train a byte-level BPE tokenizer, build a random ``RobertaModel`` and save both to ``path``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(training_texts(), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=SPECIAL_TOKENS, show_progress=False)
    with tempfile.TemporaryDirectory() as raw:
        vocab_file, merges_file = bpe.save_model(raw)
        tokenizer = RobertaTokenizerFast(vocab=vocab_file, merges=merges_file, model_max_length=MAX_POSITIONS - 2)
        tokenizer.save_pretrained(str(folder))

    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=MAX_POSITIONS, type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = RobertaModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(str(folder))
    return str(folder)
