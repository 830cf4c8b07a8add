"""Triton python model ``assemble``: handcrafted features + window embeddings -> the model's feature vector
(``AssembleStep``: pool_windows, add_embedding_features, Preprocessor.transform). Copied to
``<repo>/assemble/1/model.py``."""

from essayscore import triton_io as io
from essayscore.triton_models import backend
from essayscore.triton_models.steps import AssembleStep


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.step = AssembleStep(backend.local_path(args, "artifact_dir"))

    def execute(self, requests):
        return backend.respond_each(self.name, requests, self._one)

    def _one(self, request):
        features, embedding, owner, n_tokens = (backend.input_array(request, s) for s in io.ASSEMBLE_INPUTS)
        vector = self.step(features, embedding, owner, n_tokens)
        return backend.tensors(io.ASSEMBLE_OUTPUTS, {io.FEATURE_VECTOR.name: vector})
