"""Triton python model ``band_regressor`` (cpu profile): the residual trees as a tl2cgen-compiled XGBoost forest
(``TreesStep`` = ``CompiledTrees.predict``), with the FIL backend's tensor names and dynamic batching, so the gpu
profile swaps in FIL without touching the ensemble. Copied to ``<repo>/band_regressor/1/model.py``."""

import json

from essayscore import triton_io as io
from essayscore.triton_models import backend
from essayscore.triton_models.steps import TreesStep


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        self.in_spec = io.TensorSpec(config["input"][0]["name"], "FP32", ())
        self.out_spec = io.TensorSpec(config["output"][0]["name"], "FP32", ())
        self.step = TreesStep(backend.local_path(args, "library"))

    def execute(self, requests):
        return backend.respond_batched(self.name, requests, self.in_spec, self.out_spec, self.step)
