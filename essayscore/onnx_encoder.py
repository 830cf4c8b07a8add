"""The encoder on ONNX Runtime: a :class:`essayscore.encoder.TextEncoder` like the torch one (serving side of the
ONNX export in ``training``).

Only step 2 of the encoder pipeline changes (see :mod:`essayscore.encoder`): tokenisation and windowing are the
:class:`essayscore.encoder.Windower`'s, the window
vectors come from an ONNX graph ``(input_ids, attention_mask) int64 -> embedding float32 (batch, dim)`` that
already contains the masked mean pooling, and :func:`pool_windows` combines them per text exactly as the torch
path does. ``model_id`` is the *artifact's* encoder id, so :class:`essayscore.essay_scorer.EssayScorer` accepts it::

    enc = OnnxEncoder.from_dir("exports/v2026...", variant="int8")
    scorer = EssayScorer(artifact_dir, encoder=enc)

A folder written by ``python -m training.onnx_export`` is self-contained: ``encoder.{fp32,fp16,int8}.onnx``,
the tokenizer files, the backbone ``config.json`` (positions / hidden size, no weights) and ``onnx_encoder.json``
(window, stride, model_id, dim, name).

Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from essayscore.encoder import Windower, encode_texts
from essayscore.settings import threads_per_worker
from essayscore.windows import Windows, length_sorted_batches

META_FILE = "onnx_encoder.json"
VARIANT_FILES = {"fp32": "encoder.fp32.onnx", "fp16": "encoder.fp16.onnx", "int8": "encoder.int8.onnx"}
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"


def make_session(onnx_path: str | Path, providers: Sequence | None = None, intra_op_threads: int | None = None):
    """An ONNX Runtime session: all graph optimisations, sequential execution, ``intra_op_threads`` (default: the
    usable cores shared among the Bento's workers) and one inter-op thread. ``providers`` default to the CPU EP
    (ask for CUDA explicitly)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(intra_op_threads or threads_per_worker())
    options.inter_op_num_threads = 1
    # no busy-waiting between ops: on a small shared machine spinning threads steal the cores the other
    # stages (features, trees, other workers) need (under load here, 2 spinning threads ran 1.8x slower than 1)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only; ORT warns about every unused initializer otherwise
    return ort.InferenceSession(str(onnx_path), sess_options=options,
                                providers=list(providers or ["CPUExecutionProvider"]))


class OnnxEncoder:
    """Same interface as :class:`Encoder` where serving needs it: ``windows``, ``encode``, ``model_id``, ``dim``,
    plus ``run_windows`` (one ONNX call on ready-made windows, for the Triton encoder model).

    ``tokenizer_dir_or_encoder_config``: a folder holding the tokenizer files and the backbone ``config.json``
    (an export folder; its ``onnx_encoder.json`` supplies window / stride / model_id / name when not given), or
    an encoder config mapping such as an artifact's ``config["encoder"]`` (``name``, ``window``, ``stride``,
    ``model_id``), whose ``name`` is resolved like :class:`Encoder` does (``"minilm"``, a folder, a cached hub id).
    """

    def __init__(
        self,
        onnx_path: str | Path,
        tokenizer_dir_or_encoder_config: str | Path | Mapping,
        window: int | None = None,
        stride: int | None = None,
        model_id: str | None = None,
        providers: Sequence | None = None,
        intra_op_threads: int | None = None,
        batch_size: int = 16,
    ):
        self.onnx_path = Path(onnx_path)
        source = tokenizer_dir_or_encoder_config
        if isinstance(source, Mapping):
            meta = dict(source)
            tokenizer_source = str(meta.get("tokenizer_dir") or meta["name"])
        else:
            tokenizer_source = str(source)
            meta_path = Path(source) / META_FILE
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        window = window if window is not None else meta.get("window")
        stride = stride if stride is not None else meta.get("stride")
        model_id = model_id if model_id is not None else meta.get("model_id")
        if window is None or stride is None or not model_id:
            raise ValueError("window, stride and model_id are required (pass them, or a folder with "
                             f"{META_FILE}, or an encoder config that has them)")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")

        # the single implementation of tokenisation + windowing
        self._windower = Windower(tokenizer_source, window=int(window), stride=int(stride), batch_size=batch_size)
        self.name = str(meta.get("name") or self._windower.name)
        self.window, self.stride, self.batch_size = int(window), int(stride), int(batch_size)
        self.model_id = str(model_id)
        self.tokenizer = self._windower.tokenizer

        self.session = make_session(self.onnx_path, providers, intra_op_threads)
        # dynamic int8 quantisation scales activations per batch: keep each text's windows to themselves
        self.per_text_batches = self.onnx_path.name == VARIANT_FILES["int8"]
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != set(INPUT_NAMES):
            raise ValueError(f"{self.onnx_path}: graph inputs are {sorted(inputs)}, expected {list(INPUT_NAMES)}")
        output = self.session.get_outputs()[0]
        if output.name != OUTPUT_NAME:
            raise ValueError(f"{self.onnx_path}: graph output is {output.name!r}, expected {OUTPUT_NAME!r}")
        if output.type != "tensor(float)":
            raise ValueError(f"{self.onnx_path}: graph output is {output.type}, expected tensor(float)")
        graph_dim = output.shape[-1] if isinstance(output.shape[-1], int) else None
        self.dim = int(graph_dim or meta.get("dim") or self._windower.dim)
        if self.dim != self._windower.dim:
            raise ValueError(f"{self.onnx_path}: graph dim {self.dim} != backbone hidden size {self._windower.dim}")

    @classmethod
    def from_dir(cls, directory: str | Path, variant: str = "int8", **kwargs) -> OnnxEncoder:
        """An export folder (``python -m training.onnx_export --out DIR``) and one of its variants."""
        directory = Path(directory)
        if variant not in VARIANT_FILES:
            raise ValueError(f"variant must be one of {sorted(VARIANT_FILES)}, got {variant!r}")
        return cls(directory / VARIANT_FILES[variant], directory, **kwargs)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.model_id!r}, {self.onnx_path.name}, dim={self.dim}, providers={self.providers})"

    # ---- tokenisation (delegated: one implementation for every runtime) ------------------------------

    def text_token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self._windower.text_token_ids(texts)

    def windows(self, texts: Sequence[str]) -> Windows:
        return self._windower.windows(texts)

    # ---- inference ---------------------------------------------------------------------------------

    def run_windows(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One ONNX call: ``(n_windows, L)`` int64 ids + mask -> ``(n_windows, dim)`` float32 window embeddings."""
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attention_mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must be equal 2-d")
        if input_ids.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        (out,) = self.session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(out, dtype=np.float32)

    def embed_windows(self, windows: Windows, progress: bool = False) -> np.ndarray:
        """Like :meth:`Encoder.embed_windows`: batches of similar length, each cut to its longest window."""
        out = np.empty((len(windows), self.dim), dtype=np.float32)
        label = f"encoding ({self.onnx_path.name})" if progress else None
        for batch, width in length_sorted_batches(windows, self.batch_size, label, per_text=self.per_text_batches):
            out[batch] = self.run_windows(windows.input_ids[batch, :width], windows.attention_mask[batch, :width])
        return out

    encode = encode_texts
