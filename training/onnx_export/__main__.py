"""``python -m training.onnx_export``: see :mod:`training.onnx_export.cli`."""

import sys

from training.onnx_export.cli import main

sys.exit(main())
