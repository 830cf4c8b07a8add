"""The tensors of the Triton ``essay_scorer`` graph: names, dtypes, shapes, and a client-side request/response helper.

One declaration serves the repository generator (``training.repository`` writes every ``config.pbtxt``
from these specs), the python-backend models (they read and write tensors by these names) and clients
(``build_request`` / ``decode_response`` with ``tritonclient.http`` or ``tritonclient.grpc``; the BentoML Triton
runtime reuses them).

Shapes follow Triton's config convention: ``dims`` exclude the batch dimension of batching models; ``-1`` is
variable. Symbolic sizes (the number of features, the embedding dimension, the number of model features) are
strings here and resolved from the artifact by :func:`resolve_dims`.

The request: ``ESSAY`` (BYTES, shape ``[1]``, UTF-8) and the optional ``PROMPT`` (BYTES ``[1]``; leave it out, or
send an empty string, for "no prompt"). The ensemble is not batching (``max_batch_size: 0``): one essay per
request; Triton runs concurrent requests in parallel across model instances.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from essayscore.result import EssayResult

ENSEMBLE = "essay_scorer"
CEFR_CLASSES = 6  # A1..C2 (essayscore.bands.CEFR_LEVELS)

# model names inside the repository
PREPROCESS, ENCODER, ASSEMBLE = "preprocess", "encoder", "assemble"
BAND_REGRESSOR, POSTPROCESS = "band_regressor", "postprocess"

# Triton wire dtype -> (config enum, numpy dtype)
DTYPES: dict[str, tuple[str, Any]] = {
    "BYTES": ("TYPE_STRING", np.object_),
    "FP32": ("TYPE_FP32", np.float32),
    "FP16": ("TYPE_FP16", np.float16),
    "INT64": ("TYPE_INT64", np.int64),
    "INT32": ("TYPE_INT32", np.int32),
}
CONFIG_TO_WIRE = {config: wire for wire, (config, _) in DTYPES.items()}
Dim = int | str  # int, or a symbolic size: "n_features", "embedding_dim", "n_model_features"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # wire dtype: "BYTES", "FP32", "INT64", ...
    dims: tuple[Dim, ...]
    optional: bool = False

    @property
    def config_dtype(self) -> str:
        return DTYPES[self.dtype][0]

    @property
    def numpy_dtype(self):
        return DTYPES[self.dtype][1]

    def resolved(self, sizes: Mapping[str, int]) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, resolve_dims(self.dims, sizes), self.optional)


def resolve_dims(dims: Sequence[Dim], sizes: Mapping[str, int]) -> tuple[int, ...]:
    out = []
    for d in dims:
        if isinstance(d, str):
            if d not in sizes:
                raise KeyError(f"symbolic dimension {d!r} has no size (known: {sorted(sizes)})")
            out.append(int(sizes[d]))
        else:
            out.append(int(d))
    return tuple(out)


# ---- the ensemble's interface ----------------------------------------------------------------------------------
ESSAY = TensorSpec("ESSAY", "BYTES", (1,))
PROMPT = TensorSpec("PROMPT", "BYTES", (1,), optional=True)

IELTS_RAW = TensorSpec("IELTS_RAW", "FP32", (1,))
IELTS_BAND = TensorSpec("IELTS_BAND", "FP32", (1,))
BAND_INTERVAL = TensorSpec("BAND_INTERVAL", "FP32", (2,))
CEFR = TensorSpec("CEFR", "BYTES", (1,))
CEFR_PROBABILITIES = TensorSpec("CEFR_PROBABILITIES", "FP32", (CEFR_CLASSES,))
LENGTH_ADJUSTMENT = TensorSpec("LENGTH_ADJUSTMENT", "FP32", (1,))
MODEL_VERSION = TensorSpec("MODEL_VERSION", "BYTES", (1,))
# (1, n): a batch of one row, so that it feeds the batching tree model (FIL needs max_batch_size > 0) directly
FEATURE_VECTOR = TensorSpec("FEATURE_VECTOR", "FP32", (1, "n_model_features"))
GRAMMAR_MATCHES = TensorSpec("GRAMMAR_MATCHES", "BYTES", (1,))  # JSON list of GrammarMatch.to_dict()

# ---- step tensors ----------------------------------------------------------------------------------------------
FEATURES = TensorSpec("FEATURES", "FP32", ("n_features",))  # raw handcrafted values (FEATURES order)
INPUT_IDS = TensorSpec("INPUT_IDS", "INT64", (-1, -1))  # (n_windows, L): essay windows, then prompt windows
ATTENTION_MASK = TensorSpec("ATTENTION_MASK", "INT64", (-1, -1))
WINDOW_OWNER = TensorSpec("WINDOW_OWNER", "INT64", (-1,))  # 0 = essay, 1 = prompt
WINDOW_TOKENS = TensorSpec("WINDOW_TOKENS", "INT64", (-1,))
EMBEDDING = TensorSpec("EMBEDDING", "FP32", (-1, "embedding_dim"))  # one row per window

# The tree model uses the FIL backend's tensor names in both profiles, so the ensemble is the same.
TREE_INPUT = TensorSpec("input__0", "FP32", ("n_model_features",))
BAND_OUTPUT = TensorSpec("output__0", "FP32", (1,))
RAW_BAND = TensorSpec("RAW_BAND", "FP32", (1, 1))  # the residual trees' (batch of one) output, into postprocess

PREPROCESS_INPUTS = (ESSAY, PROMPT)
PREPROCESS_OUTPUTS = (FEATURES, INPUT_IDS, ATTENTION_MASK, WINDOW_OWNER, WINDOW_TOKENS, GRAMMAR_MATCHES)
ASSEMBLE_INPUTS = (FEATURES, EMBEDDING, WINDOW_OWNER, WINDOW_TOKENS)
ASSEMBLE_OUTPUTS = (FEATURE_VECTOR,)
# postprocess also reads the model input row: the linear part and the length terms of ScoringModel.finish need it
POSTPROCESS_INPUTS = (RAW_BAND, FEATURE_VECTOR)
POSTPROCESS_OUTPUTS = (IELTS_RAW, IELTS_BAND, BAND_INTERVAL, CEFR, CEFR_PROBABILITIES, LENGTH_ADJUSTMENT,
                       MODEL_VERSION)
ENSEMBLE_INPUTS = (ESSAY, PROMPT)
ENSEMBLE_OUTPUTS = POSTPROCESS_OUTPUTS + (FEATURE_VECTOR, GRAMMAR_MATCHES)


# ---- numpy helpers shared by the python models and clients -------------------------------------------------------
def bytes_tensor(values: Sequence[str | bytes]) -> np.ndarray:
    """A BYTES tensor (object array of UTF-8 ``bytes``)."""
    return np.array([v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values], dtype=np.object_)


def decode_text(value: Any) -> str:
    """One element of a BYTES tensor -> str (raises UnicodeDecodeError on invalid UTF-8)."""
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


# ---- client side ------------------------------------------------------------------------------------------------
def _client_module(client_or_module):
    """``tritonclient.http`` or ``tritonclient.grpc`` for a client instance (or the module itself)."""
    import importlib

    name = client_or_module.__name__ if hasattr(client_or_module, "InferInput") else type(client_or_module).__module__
    package = "tritonclient.grpc" if ".grpc" in name else "tritonclient.http"
    return importlib.import_module(package)


def build_request(client_or_module, essay: str, prompt: str | None = None,
                  outputs: Sequence[TensorSpec] = ENSEMBLE_OUTPUTS):
    """``(inputs, requested_outputs)`` for ``client.infer(ENSEMBLE, inputs, outputs=requested_outputs)``.

    A prompt that is None, empty or whitespace sends no PROMPT tensor (``essayscore.text.has_prompt``; the input is
    optional in the ensemble)."""
    from essayscore.text import has_prompt

    mod = _client_module(client_or_module)
    inputs = []
    for spec, value in ((ESSAY, essay), (PROMPT, prompt)):
        if value is None or (spec is PROMPT and not has_prompt(value)):
            continue
        tensor = mod.InferInput(spec.name, [1], spec.dtype)
        tensor.set_data_from_numpy(bytes_tensor([value]))
        inputs.append(tensor)
    return inputs, [mod.InferRequestedOutput(spec.name) for spec in outputs]


def result_tensors(result: EssayResult) -> dict[str, np.ndarray]:
    """The postprocess step's outputs for one result (the inverse of :func:`decode_response`)."""
    return {
        IELTS_RAW.name: np.array([result.ielts_raw], dtype=np.float32),
        IELTS_BAND.name: np.array([result.ielts_band], dtype=np.float32),
        BAND_INTERVAL.name: np.array(result.band_interval, dtype=np.float32),
        CEFR.name: bytes_tensor([result.cefr]),
        CEFR_PROBABILITIES.name: result.cefr_vector.astype(np.float32),
        LENGTH_ADJUSTMENT.name: np.array([result.length_adjustment], dtype=np.float32),
        MODEL_VERSION.name: bytes_tensor([result.model_version]),
    }


def decode_response(result, handcrafted: Callable[[np.ndarray], np.ndarray] | None = None) -> EssayResult:
    """An ``InferResult`` of the ensemble -> :class:`essayscore.result.EssayResult`.

    ``handcrafted``: recovers the raw handcrafted values from the model input row (the artifact's
    ``Preprocessor.handcrafted``); without it they are left empty (a client without the artifact)."""
    from essayscore.bands import CEFR_LEVELS
    from essayscore.features.grammar import GrammarMatch
    from essayscore.result import EssayResult

    def arr(spec: TensorSpec) -> np.ndarray:
        value = result.as_numpy(spec.name)
        if value is None:
            raise KeyError(f"the response has no output {spec.name!r}")
        return value.reshape(-1)

    probabilities = arr(CEFR_PROBABILITIES).astype(np.float64)
    interval = arr(BAND_INTERVAL)
    x = arr(FEATURE_VECTOR).astype(np.float32)
    matches = tuple(GrammarMatch(m["offset"], m["length"], m["category"], m["rule_id"], m["message"],
                                 tuple(m.get("suggestions", ())))
                    for m in json.loads(decode_text(arr(GRAMMAR_MATCHES)[0])))
    return EssayResult(
        ielts_band=float(arr(IELTS_BAND)[0]), ielts_raw=float(arr(IELTS_RAW)[0]),
        band_interval=(float(interval[0]), float(interval[1])), cefr=decode_text(arr(CEFR)[0]),
        cefr_probabilities={lvl: float(p) for lvl, p in zip(CEFR_LEVELS, probabilities)},
        length_adjustment=float(arr(LENGTH_ADJUSTMENT)[0]), model_version=decode_text(arr(MODEL_VERSION)[0]),
        feature_vector=x,
        handcrafted=(handcrafted(x).reshape(-1).astype(np.float32) if handcrafted is not None
                     else np.zeros(0, dtype=np.float32)),
        matches=matches)


def score(client, essay: str, prompt: str | None = None, model: str = ENSEMBLE,
          handcrafted: Callable[[np.ndarray], np.ndarray] | None = None, **infer_kwargs) -> EssayResult:
    """Score one essay with a ``tritonclient`` HTTP or gRPC client; see :func:`decode_response`."""
    inputs, outputs = build_request(client, essay, prompt)
    return decode_response(client.infer(model, inputs, outputs=outputs, **infer_kwargs), handcrafted)
