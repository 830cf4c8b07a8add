"""The ensemble's steps as plain Python: numpy arrays in, numpy arrays out, keyed by the tensor names of
:mod:`essayscore.triton_io`. The python-backend models are thin adapters around these classes; tests and the
benchmark can run the same chain in-process.

Each step only composes the runtime package's functions, in the order :class:`essayscore.essay_scorer.EssayScorer`
calls them, so the Triton graph and the in-process path compute the same thing:

=============  ==============================================================================================
preprocess     ``FeatureExtractor.extract`` with the artifact's ``ErrorDetector`` (handcrafted values + grammar
               matches) and ``Encoder.windows`` of ``[essay, prompt]`` (tokenizer only; no weights)
encoder        ``OnnxEncoder.run_windows`` (cpu profile; the gpu profile runs the ONNX file on the onnxruntime
               backend instead)
assemble       ``pool_windows`` -> ``add_embedding_features`` -> ``Preprocessor.transform``
trees          ``CompiledTrees.predict`` of the residual trees (cpu profile; FIL in the gpu profile)
postprocess    ``ScoringModel.finish`` of the trees' output and the model input row
=============  ==============================================================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from essayscore import triton_io as io
from essayscore.text import prompt_or_none


class StepInputError(ValueError):
    """A request the caller has to fix (the python models answer it with a Triton error naming the problem)."""


# ------------------------------------------------------------------------------------------------------------
class PreprocessStep:
    """ESSAY, PROMPT -> FEATURES, INPUT_IDS, ATTENTION_MASK, WINDOW_OWNER, WINDOW_TOKENS, GRAMMAR_MATCHES.

    ``encoder_dir``: an export folder of ``training.onnx_export`` (tokenizer files, backbone ``config.json`` and
    ``onnx_encoder.json``; the .onnx files are not needed here). ``detector_path``: the artifact's
    ``error_detector.npz``, None for a model trained without one; as in ``EssayScorer``, a caller's ``extractor``
    gets it too (without it the ``learned_errors`` columns are NaN and the scores are not the model's).
    """

    def __init__(self, encoder_dir: Path, detector_path: Path | None = None, extractor=None):
        from essayscore.encoder import Windower
        from essayscore.error_detector import ErrorDetector
        from essayscore.features.extractor import with_error_detector
        from essayscore.onnx_encoder import META_FILE

        encoder_dir = Path(encoder_dir)
        meta = json.loads((encoder_dir / META_FILE).read_text())
        # the one implementation of tokenisation + windowing (no weights)
        self.windower = Windower(str(encoder_dir), window=int(meta["window"]), stride=int(meta["stride"]))
        self.model_id = meta["model_id"]
        detector = ErrorDetector.load(Path(detector_path)) if detector_path is not None else None
        self.extractor = with_error_detector(detector, extractor)

    def warmup(self) -> None:
        """Load the lazy parts (spaCy pipes, spell checker, prompt cache code) before the first request."""
        self("This is a short essay that is used to warm up the models. It have a mistake.", "Discuss this topic.")

    def __call__(self, essay: str, prompt: str | None = None) -> dict[str, np.ndarray]:
        if not isinstance(essay, str) or not essay.strip():
            raise StepInputError("ESSAY is empty or only whitespace")
        prompt = prompt_or_none(prompt)
        result = self.extractor.extract(essay, prompt)
        windows = self.windower.windows([essay] if prompt is None else [essay, prompt])
        matches = json.dumps([m.to_dict() for m in result.matches], ensure_ascii=False)
        return {
            io.FEATURES.name: np.asarray(result.values, dtype=np.float32),
            io.INPUT_IDS.name: windows.input_ids,
            io.ATTENTION_MASK.name: windows.attention_mask,
            io.WINDOW_OWNER.name: windows.owner,
            io.WINDOW_TOKENS.name: windows.n_tokens,
            io.GRAMMAR_MATCHES.name: io.bytes_tensor([matches]),
        }


# ------------------------------------------------------------------------------------------------------------
class EncoderStep:
    """INPUT_IDS, ATTENTION_MASK -> EMBEDDING (one row per window) with ONNX Runtime on the CPU."""

    def __init__(self, onnx_path: Path, encoder_dir: Path, intra_op_threads: int | None = None):
        from essayscore.onnx_encoder import OnnxEncoder

        self.encoder = OnnxEncoder(Path(onnx_path), Path(encoder_dir), intra_op_threads=intra_op_threads)

    def warmup(self) -> None:
        windows = self.encoder.windows(["A short text to warm up the encoder."])
        self(windows.input_ids, windows.attention_mask)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        from essayscore.windows import windows_from_padded

        # re-batched by length: the request's windows arrive padded to its longest (essay and prompt together)
        return self.encoder.embed_windows(windows_from_padded(input_ids, attention_mask))


# ------------------------------------------------------------------------------------------------------------
class AssembleStep:
    """FEATURES, EMBEDDING, WINDOW_OWNER, WINDOW_TOKENS -> FEATURE_VECTOR (1, n_model_features)."""

    def __init__(self, artifact_dir: Path):
        from essayscore.artifacts import Artifact

        self.preprocessor = Artifact(Path(artifact_dir)).preprocessor()  # a verified (partial) artifact

    def __call__(self, features: np.ndarray, embedding: np.ndarray, owner: np.ndarray,
                 n_tokens: np.ndarray) -> np.ndarray:
        from essayscore.windows import pool_windows
        from essayscore.features import add_embedding_features

        owner = np.asarray(owner, dtype=np.int64).reshape(-1)
        n_texts = int(owner.max()) + 1 if owner.size else 0
        if n_texts not in (1, 2):
            raise StepInputError(
                f"WINDOW_OWNER must name the essay (0) and optionally the prompt (1), got {n_texts} texts"
            )
        pooled = pool_windows(embedding, owner, np.asarray(n_tokens).reshape(-1), n_texts)
        essay_emb = pooled[:1]
        # as EssayScorer.embed: a missing prompt is a NaN row, which add_embedding_features turns into NaN cosine
        prompt_emb = pooled[1:2] if n_texts == 2 else np.full_like(essay_emb, np.nan)
        hand = add_embedding_features(np.asarray(features, dtype=np.float32).reshape(1, -1).copy(), essay_emb,
                                      prompt_emb)
        return self.preprocessor.transform(hand, essay_emb).astype(np.float32)


# ------------------------------------------------------------------------------------------------------------
class TreesStep:
    """input__0 (batch, n_model_features) -> output__0 (batch, 1): the residual trees' output (the tree margin of
    ``ScoringModel.finish``).

    The tl2cgen library from ``compile_xgboost``; outputs equal XGBoost's ``inplace_predict`` (what FIL serves
    in the gpu profile)."""

    def __init__(self, library: Path):
        from essayscore.compiled_trees import CompiledTrees

        self.trees = CompiledTrees(Path(library), nthread=1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.trees.predict(np.asarray(x, dtype=np.float32)), dtype=np.float32)
        return out.reshape(len(x), -1)


# ------------------------------------------------------------------------------------------------------------
class _NoTrees:
    """Postprocess never runs the trees (band_regressor did): it needs the linear part, length terms, band scale
    and conformal quantiles."""

    def predict_band(self, x):  # pragma: no cover - never called
        raise RuntimeError("postprocess does not run trees")


class PostprocessStep:
    """RAW_BAND (1, 1), FEATURE_VECTOR (1, n_model_features) -> the EssayResult's tensors (IELTS_RAW,
    IELTS_BAND, BAND_INTERVAL, CEFR, CEFR_PROBABILITIES, LENGTH_ADJUSTMENT, MODEL_VERSION)."""

    def __init__(self, artifact_dir: Path, version: str):
        from essayscore.artifacts import Artifact

        self.model = Artifact(Path(artifact_dir)).scoring_model(trees=_NoTrees())
        self.version = version

    def __call__(self, raw_band: np.ndarray, feature_vector: np.ndarray) -> dict[str, np.ndarray]:
        margin = np.asarray(raw_band, dtype=np.float64).reshape(-1)  # the residual trees' output
        x = np.asarray(feature_vector, dtype=np.float32).reshape(len(margin), -1)
        result = self.model.finish(margin, x).result(0, self.version, x[0], self.model.preprocessor.handcrafted(x))
        return io.result_tensors(result)
