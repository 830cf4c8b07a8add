"""Triton python model ``preprocess``: ESSAY [, PROMPT] -> handcrafted features, grammar matches and the
encoder's token windows (``PreprocessStep``). Copied to ``<repo>/preprocess/1/model.py``.

The config parameter ``error_detector`` names the artifact's learned error detector; the generator leaves it out
for a model trained without one."""

from essayscore import triton_io as io
from essayscore.triton_models import backend
from essayscore.triton_models.steps import PreprocessStep


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        detector = backend.local_path(args, "error_detector") if "error_detector" in backend.parameters(args) else None
        self.step = PreprocessStep(backend.local_path(args, "encoder_dir"), detector)
        self.step.warmup()  # the first real request should not pay for lazy loading (~6 s)

    def execute(self, requests):
        return backend.respond_each(self.name, requests, self._one)

    def _one(self, request):
        essay = backend.input_text(request, io.ESSAY)
        prompt = backend.input_text(request, io.PROMPT, required=False)
        return backend.tensors(io.PREPROCESS_OUTPUTS, self.step(essay, prompt))
