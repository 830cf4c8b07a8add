"""Triton python model ``postprocess``: the residual trees' output + the model input row -> half band, interval,
CEFR and CEFR probabilities (``PostprocessStep`` = ScoringModel.finish). Copied to
``<repo>/postprocess/1/model.py``."""

from essayscore import triton_io as io
from essayscore.triton_models import backend
from essayscore.triton_models.steps import PostprocessStep


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.step = PostprocessStep(backend.local_path(args, "artifact_dir"),
                                    backend.parameter(args, "artifact_version"))

    def execute(self, requests):
        return backend.respond_each(self.name, requests, self._one)

    def _one(self, request):
        raw, feature_vector = (backend.input_array(request, s) for s in io.POSTPROCESS_INPUTS)
        return backend.tensors(io.POSTPROCESS_OUTPUTS, self.step(raw, feature_vector))
