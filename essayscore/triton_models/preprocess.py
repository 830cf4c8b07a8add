"""Triton python model ``preprocess``: ESSAY [, PROMPT] -> handcrafted features, grammar matches and the
encoder's token windows (``PreprocessStep``). Copied to ``<repo>/preprocess/1/model.py``."""

from essayscore import triton_io as io
from essayscore.triton_models import backend
from essayscore.triton_models.steps import PreprocessStep


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.step = PreprocessStep(backend.local_path(args, "encoder_dir"))
        self.step.warmup()  # the first real request should not pay for lazy loading (~6 s)

    def execute(self, requests):
        return backend.respond_each(self.name, requests, self._one)

    def _one(self, request):
        essay = backend.input_text(request, io.ESSAY)
        prompt = backend.input_text(request, io.PROMPT, required=False)
        return backend.tensors(io.PREPROCESS_OUTPUTS, self.step(essay, prompt))
