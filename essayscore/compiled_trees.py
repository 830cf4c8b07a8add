"""XGBoost models compiled to native code with Treelite + TL2cgen.

``compile_xgboost`` turns an XGBoost model file (JSON or UBJ) into a shared library plus a small sidecar
(``<name>.tl2cgen.json``: objective, shapes, compile time, versions). ``CompiledTrees`` loads both and predicts
with the same output semantics as the XGBoost model's ``Booster.inplace_predict`` / ``Booster.predict``
(default, not margin):

* regression (``reg:*``) and binary objectives -> shape ``(n,)`` (transformed: identity / sigmoid / exp)
* ``multi:softprob`` -> probabilities ``(n, K)``
* ``multi:softmax`` -> class index ``(n,)`` as float32 (XGBoost returns the argmax too)
* multi-target models -> ``(n, T)`` (or ``(n, T, K)``)

What TL2cgen itself returns (checked with tl2cgen 1.0.0 / treelite 4.8.1 / xgboost 3.2): a float32 array of shape
``(n, num_target, max_num_class)`` -- ``(n, 1, 1)`` for a regressor, ``(n, 1, K)`` for a K-class model -- with
the postprocessor (softmax / sigmoid / exponential) already applied unless ``pred_margin=True``, and XGBoost's
``base_score`` (a per-class vector intercept since XGBoost 3.0) already added. Missing values are NaN, as in
XGBoost. So the only normalisation needed is a reshape, and an argmax for ``multi:softmax``.

The Predictor of TL2cgen must not be called from two threads at once: ``CompiledTrees.predict`` holds a lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SIDECAR_SUFFIX = ".tl2cgen.json"


def _xgboost_meta(model_path: Path) -> dict[str, Any]:
    """Objective and shape facts read with XGBoost itself (compile time only)."""
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(model_path))
    config = json.loads(booster.save_config())
    learner = config["learner"]
    mparam = learner["learner_model_param"]
    return {
        "objective": learner["objective"]["name"],
        "num_feature": int(mparam["num_feature"]),
        "num_class": int(mparam.get("num_class", 0) or 0),
        "num_target": int(mparam.get("num_target", 1) or 1),
        "num_trees": int(booster.num_boosted_rounds()) * max(1, int(mparam.get("num_class", 0) or 0)),
        "num_boosted_rounds": int(booster.num_boosted_rounds()),
        "xgboost_version": xgb.__version__,
    }


def load_treelite_model(model_path: Path):
    """Load an XGBoost JSON or UBJ model with Treelite (format from the suffix; other suffixes are sniffed)."""
    import treelite

    model_path = Path(model_path)
    suffix = model_path.suffix.lower()
    if suffix == ".json":
        choice = "json"
    elif suffix in (".ubj", ".ubjson"):
        choice = "ubjson"
    else:  # unknown suffix: let Treelite sniff the first bytes (legacy binary models are not supported)
        choice = "inspect"
    return treelite.frontend.load_xgboost_model(str(model_path), format_choice=choice)


def compile_xgboost(
    model_path: Path,
    out_dir: Path,
    name: str,
    nthread: int = 2,
    quantize: bool = False,
    parallel_comp: int | None = None,
    annotate_data: np.ndarray | None = None,
    options: Sequence[str] | None = None,
) -> Path:
    """Compile an XGBoost model (JSON or UBJ) to ``out_dir/<name>.so``; return the library path.

    * ``nthread``: compiler processes run in parallel (gcc ``-O3``).
    * ``parallel_comp``: number of C translation units the trees are split into (default: ``max(nthread, 1)``
      rounded up to a multiple of it, at most one unit per ~25 trees); more units = more parallel compilation.
    * ``quantize``: TL2cgen ``quantize=1``: thresholds become integer bin indices (faster on deep/wide forests).
    * ``annotate_data``: rows (float32, NaN = missing) used to annotate branch likelihood (``annotate_in``).
    * ``options``: extra compiler flags (e.g. ``["-O2"]`` to cut compile time: the last ``-O`` wins).

    Writes ``out_dir/<name>.tl2cgen.json`` with the objective, shapes and the compile time in seconds.
    """
    import tl2cgen
    import treelite

    model_path = Path(model_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    libpath = out_dir / f"{name}.so"

    t0 = time.perf_counter()
    meta = _xgboost_meta(model_path)
    model = load_treelite_model(model_path)
    load_s = time.perf_counter() - t0

    if parallel_comp is None:
        units_by_size = max(1, meta["num_trees"] // 25)
        parallel_comp = max(1, min(max(nthread, 1) * 4, units_by_size))
    params: dict[str, Any] = {"parallel_comp": int(parallel_comp)}
    if quantize:
        params["quantize"] = 1
    annotation_path = None
    if annotate_data is not None:
        annotation_path = out_dir / f"{name}.annotation.json"
        dmat = tl2cgen.DMatrix(np.ascontiguousarray(annotate_data, dtype=np.float32))
        tl2cgen.annotate_branch(model, dmat, annotation_path, nthread=nthread)
        params["annotate_in"] = str(annotation_path)

    t1 = time.perf_counter()
    tl2cgen.export_lib(
        model,
        toolchain="gcc",
        libpath=str(libpath),
        params=params,
        nthread=nthread,
        options=list(options) if options else None,
    )
    compile_s = time.perf_counter() - t1

    meta.update(
        {
            "name": name,
            "source_model": str(model_path.resolve()),
            "library": libpath.name,
            "params": params,
            "options": list(options) if options else [],
            "load_s": round(load_s, 3),
            "compile_s": round(compile_s, 3),
            "treelite_version": treelite.__version__,
            "tl2cgen_version": tl2cgen.__version__,
            "annotated": annotation_path is not None,
        }
    )
    (out_dir / f"{name}{SIDECAR_SUFFIX}").write_text(json.dumps(meta, indent=2))
    return libpath


class CompiledTrees:
    """A compiled forest with XGBoost-equal ``predict`` (see module doc for shapes).

    ``libpath``: the ``.so`` from :func:`compile_xgboost` (its sidecar JSON is read when present; without it
    the output is normalised from the library's own metadata, and ``multi:softmax`` cannot be recognised).
    ``nthread``: OpenMP threads per predict call (1 is best for single rows; 2+ helps batches of hundreds).
    """

    def __init__(self, libpath: Path, nthread: int | None = 1) -> None:
        import tl2cgen

        self._tl2cgen = tl2cgen
        self.libpath = Path(libpath)
        sidecar = self.libpath.with_name(self.libpath.name[: -len(self.libpath.suffix)] + SIDECAR_SUFFIX)
        self.meta: dict[str, Any] = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        self._predictor = tl2cgen.Predictor(str(self.libpath), nthread=nthread if nthread is not None else -1)
        self.num_feature: int = int(self._predictor.num_feature)
        self.num_target: int = int(self._predictor.num_target)
        self.num_class: list[int] = [int(c) for c in self._predictor.num_class]
        self.objective: str | None = self.meta.get("objective")
        self._lock = threading.Lock()

    @property
    def compile_s(self) -> float | None:
        return self.meta.get("compile_s")

    def _as_matrix(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D feature matrix, got shape {X.shape}")
        if X.shape[1] != self.num_feature:
            raise ValueError(f"expected {self.num_feature} features, got {X.shape[1]}")
        return np.ascontiguousarray(X, dtype=np.float32)

    def predict_raw(self, X: np.ndarray, pred_margin: bool = False) -> np.ndarray:
        """TL2cgen's own output: float32 ``(n, num_target, max_num_class)``."""
        X = self._as_matrix(X)
        if X.shape[0] == 0:
            return np.zeros((0, self.num_target, max(self.num_class)), dtype=np.float32)
        dmat = self._tl2cgen.DMatrix(X, missing=np.nan)
        with self._lock:
            return self._predictor.predict(dmat, pred_margin=pred_margin)

    def predict(self, X: np.ndarray, output_margin: bool = False) -> np.ndarray:
        """Predictions shaped and transformed like XGBoost's ``Booster.inplace_predict`` (``predict_type='value'``,
        or ``'margin'`` with ``output_margin=True``)."""
        out = self.predict_raw(X, pred_margin=output_margin)
        n, t, k = out.shape
        if t == 1 and k == 1:
            return out.reshape(n)
        if t == 1:
            out = out.reshape(n, k)
            if self.objective == "multi:softmax" and not output_margin:
                return out.argmax(axis=1).astype(np.float32)
            return out
        if k == 1:
            return out.reshape(n, t)
        return out

    def __repr__(self) -> str:
        return (
            f"CompiledTrees({self.libpath.name}, objective={self.objective}, features={self.num_feature}, "
            f"targets={self.num_target}, classes={self.num_class})"
        )
