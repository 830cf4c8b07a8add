"""``python -m training.repository``: see :mod:`training.repository.cli`."""

import sys

from training.repository.cli import main

sys.exit(main())
