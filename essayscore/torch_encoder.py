"""The encoder on PyTorch: :class:`TorchEncoder` (training, the reference every export is validated against,
and the embedded runtime's fallback), the exported graph (mean pooling inside), weight loading and thread setup.
Imported only when torch weights are needed, so the ONNX and Triton paths never import torch."""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager

import numpy as np
import torch

from essayscore.encoder import Windower, encode_texts, local_model_dir
from essayscore.settings import threads_per_worker
from essayscore.windows import Windows, length_sorted_batches

_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_threads_configured = False


def configure_torch_threads() -> None:
    """Once per process: intra-op threads = usable cores / Bento workers, 1 inter-op thread, unless the user
    chose already (``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set)."""
    global _threads_configured
    if _threads_configured:
        return
    _threads_configured = True
    if any(os.environ.get(var) for var in _THREAD_ENV_VARS):
        return
    torch.set_num_threads(threads_per_worker())
    try:
        torch.set_num_interop_threads(1)  # one forward at a time; extra inter-op threads only contend
    except RuntimeError:  # inter-op pool already started: leave it
        pass


# --------------------------------------------------------------------------------------------------------
# the exported graph
# --------------------------------------------------------------------------------------------------------


class MeanPooledEncoder(torch.nn.Module):
    """``(input_ids, attention_mask)`` int64 -> ``(batch, dim)`` float32 mean of ``last_hidden_state`` over the mask.

    Takes exactly those two inputs so that it exports to ONNX unchanged. Models with a token-type embedding
    (BERT-like) get all-zero ``token_type_ids`` built inside the graph; RoBERTa-like models get none.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        config = model.config
        accepts_types = "token_type_ids" in inspect.signature(model.forward).parameters
        self.uses_token_types = bool(accepts_types and getattr(config, "type_vocab_size", 0) > 1)

    @classmethod
    def from_pretrained(cls, path_or_id: str) -> MeanPooledEncoder:
        return cls(load_backbone(path_or_id)).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.uses_token_types:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        hidden = self.model(**kwargs).last_hidden_state.float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def load_backbone(path_or_id: str) -> torch.nn.Module:
    """The bare ``AutoModel`` (no pooler head, float32, eval mode) from local files only."""
    from transformers import AutoConfig, AutoModel

    folder = str(local_model_dir(path_or_id))
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    kwargs = {}
    try:
        model_class = AutoModel._model_mapping[type(config)]
    except (AttributeError, KeyError):
        model_class = None
    # transformers annotates the mapping's values as tuples; AutoModel's are model classes
    if model_class is not None and "add_pooling_layer" in inspect.signature(
        model_class.__init__  # type: ignore[misc]
    ).parameters:
        kwargs["add_pooling_layer"] = False  # the pooler is unused (and often absent from sentence checkpoints)
    with _quiet_transformers():  # the "pooler weights unused" load report and progress bar are expected noise
        model = AutoModel.from_pretrained(folder, config=config, local_files_only=True, **kwargs)
    return model.float().eval()


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


@torch.inference_mode()
def embed_windows(module: MeanPooledEncoder, windows: Windows, dim: int, batch_size: int, device: str = "cpu",
                  progress_label: str | None = None) -> np.ndarray:
    """``(n_windows, dim)`` float32 window embeddings; batches of similar length to limit padding."""
    out = np.empty((len(windows), dim), dtype=np.float32)
    for batch, width in length_sorted_batches(windows, batch_size, progress_label):
        ids = torch.from_numpy(windows.input_ids[batch, :width]).to(device)
        mask = torch.from_numpy(windows.attention_mask[batch, :width]).to(device)
        out[batch] = module(ids, mask).float().cpu().numpy()
    return out


class TorchEncoder(Windower):
    """A frozen encoder on PyTorch: the :class:`Windower`'s windows, embedded by :class:`MeanPooledEncoder`."""

    def __init__(self, name: str | None = None, window: int | None = None, stride: int | None = None,
                 batch_size: int | None = None, device: str = "cpu"):
        super().__init__(name, window=window, stride=stride, batch_size=batch_size)
        self.device = device
        self._module: MeanPooledEncoder | None = None  # loaded on first use: windows/model_id need no weights

    @property
    def module(self) -> MeanPooledEncoder:
        """The torch graph (eval mode), loaded on first access."""
        if self._module is None:
            if str(self.device).startswith("cpu"):
                configure_torch_threads()
            self._module = MeanPooledEncoder(load_backbone(str(self.folder))).to(self.device).eval()
        return self._module

    def embed_windows(self, windows: Windows, progress: bool = False) -> np.ndarray:
        """``(n_windows, dim)`` float32 window embeddings; batches of similar length to limit padding."""
        return embed_windows(self.module, windows, self.dim, self.batch_size, self.device,
                             progress_label=f"encoding ({self.name})" if progress else None)

    encode = encode_texts
