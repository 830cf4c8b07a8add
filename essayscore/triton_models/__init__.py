"""The python-backend models of the Triton model repository, and the plain-Python steps behind them.

* :mod:`essayscore.triton_models.steps`: one class per ensemble step (preprocess, encoder, assemble, trees,
  postprocess) taking and returning numpy arrays keyed by tensor name. No Triton import: tests and the benchmark
  run them in-process, and every step only composes functions of the runtime package (``FeatureExtractor``,
  ``Encoder.windows``, ``pool_windows``, ``add_embedding_features``, ``Preprocessor.transform``,
  ``ErrorDetector``, ``CompiledTrees``, ``ScoringModel.finish``), so nothing is implemented twice.
* ``preprocess.py``, ``encoder.py``, ``assemble.py``, ``trees.py``, ``postprocess.py``: the ``model.py`` of each
  python model (``training.repository`` copies them to ``<repo>/<model>/1/model.py``). They only move
  tensors between Triton and a step, via :mod:`essayscore.triton_models.backend`.

Tensor names, dtypes and shapes of every model are declared once, in :mod:`essayscore.triton_io`.
"""
