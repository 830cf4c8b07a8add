"""Triton python model ``encoder`` (cpu profile): token windows -> one embedding per window with ONNX Runtime
(``EncoderStep`` = ``OnnxEncoder.run_windows``). Copied to ``<repo>/encoder/1/model.py``.

Tensor names come from this model's own config, which the generator copies from the ONNX graph (the gpu
profile serves the same graph on the onnxruntime backend under the same names)."""

import json

from essayscore.triton_models import backend
from essayscore.triton_models.steps import EncoderStep


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        self.input_names = [t["name"] for t in config["input"]]  # input_ids, attention_mask
        self.output_name = config["output"][0]["name"]
        threads = int(backend.parameter(args, "intra_op_threads", "0")) or None
        self.step = EncoderStep(backend.local_path(args, "onnx_file"), backend.local_path(args, "encoder_dir"),
                                intra_op_threads=threads)
        self.step.warmup()

    def execute(self, requests):
        return backend.respond_each(self.name, requests, self._one)

    def _one(self, request):
        import triton_python_backend_utils as pb_utils

        ids, mask = (pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names)
        return [pb_utils.Tensor(self.output_name, self.step(ids, mask))]
