"""Glue between Triton's python backend and :mod:`essayscore.triton_models.steps`.

Imported only by the ``model.py`` files, inside the python backend stub (``triton_python_backend_utils`` exists
only there). A model finds its files in its own version folder (``args["model_repository"]`` is the model's
folder, ``args["model_version"]`` its version) and its settings in its config's ``parameters``; nothing points
into the source tree.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, overload

import numpy as np
import triton_python_backend_utils as pb_utils

from essayscore import triton_io as io
from essayscore.triton_models.steps import StepInputError


def version_dir(args: dict) -> Path:
    return Path(args["model_repository"]) / str(args["model_version"])


def parameters(args: dict) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def parameter(args: dict, key: str, default: str | None = None) -> str:
    value = parameters(args).get(key, default)
    if value is None:
        raise pb_utils.TritonModelException(f"{args['model_name']}: config parameter {key!r} is missing")
    return value


def local_path(args: dict, key: str) -> Path:
    """A file or folder named by a config parameter, relative to the model's version folder."""
    path = (version_dir(args) / parameter(args, key)).resolve()
    if not path.exists():
        raise pb_utils.TritonModelException(f"{args['model_name']}: {key} = {path} does not exist")
    return path


@overload
def input_array(request, spec: io.TensorSpec, required: Literal[True] = True) -> np.ndarray: ...


@overload
def input_array(request, spec: io.TensorSpec, required: bool) -> np.ndarray | None: ...


def input_array(request, spec: io.TensorSpec, required: bool = True) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
    if tensor is None:
        if required:
            raise StepInputError(f"input {spec.name} is missing")
        return None
    return tensor.as_numpy()


def input_text(request, spec: io.TensorSpec, required: bool = True) -> str | None:
    """The single UTF-8 string of a BYTES input of shape [1]; None when an optional input is absent."""
    value = input_array(request, spec, required)
    if value is None:
        return None
    if value.size != 1:
        raise StepInputError(f"input {spec.name} must hold exactly one string, got shape {list(value.shape)}")
    try:
        return io.decode_text(value.reshape(-1)[0])
    except UnicodeDecodeError as exc:
        raise StepInputError(f"input {spec.name} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def tensors(specs: Sequence[io.TensorSpec], values: Mapping[str, np.ndarray]) -> list:
    return [pb_utils.Tensor(s.name, np.ascontiguousarray(values[s.name], dtype=s.numpy_dtype)) for s in specs]


def _error(message: str, invalid_argument: bool):
    try:
        code = pb_utils.TritonError.INVALID_ARG if invalid_argument else pb_utils.TritonError.INTERNAL
        return pb_utils.TritonError(message, code)
    except (AttributeError, TypeError):  # older python backends: no error codes
        return pb_utils.TritonError(message)


def error_response(model: str, exc: BaseException):
    if isinstance(exc, StepInputError):
        return pb_utils.InferenceResponse(error=_error(f"{model}: {exc}", invalid_argument=True))
    pb_utils.Logger.log_error(f"{model}: {''.join(traceback.format_exception(exc))}")
    return pb_utils.InferenceResponse(error=_error(f"{model}: {type(exc).__name__}: {exc}", invalid_argument=False))


def respond_each(model: str, requests: Iterable, handler: Callable[[object], list]) -> list:
    """One response per request: ``handler(request)`` -> output tensors, or an error response naming the problem
    (a bad request never takes down the model or its other requests)."""
    responses = []
    for request in requests:
        try:
            responses.append(pb_utils.InferenceResponse(output_tensors=handler(request)))
        except Exception as exc:  # noqa: BLE001 - every failure becomes that request's error
            responses.append(error_response(model, exc))
    return responses


def respond_batched(model: str, requests: Sequence, in_spec: io.TensorSpec, out_spec: io.TensorSpec,
                    fn: Callable[[np.ndarray], np.ndarray]) -> list:
    """Dynamic batching: the rows of all requests in one call of ``fn``, split back per request."""
    try:
        arrays = [input_array(r, in_spec) for r in requests]
        if not arrays:
            return []
        out = fn(np.concatenate(arrays, axis=0))
    except Exception:  # noqa: BLE001 - fall back to one call per request, so only the bad request fails
        return respond_each(model, requests, lambda r: [pb_utils.Tensor(
            out_spec.name, np.ascontiguousarray(fn(input_array(r, in_spec)), dtype=out_spec.numpy_dtype))])
    responses, start = [], 0
    for array in arrays:
        part = np.ascontiguousarray(out[start:start + len(array)], dtype=out_spec.numpy_dtype)
        start += len(array)
        responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(out_spec.name, part)]))
    return responses
