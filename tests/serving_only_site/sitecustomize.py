"""Test helper, not shipped: with ``ESSAYSCORE_TEST_HIDDEN`` set (by ``tests/serving_only.py``), installed packages
outside the serving set cannot be imported (``import torch`` raises ModuleNotFoundError, ``find_spec`` answers
None) and ``importlib.metadata`` does not list their distributions, as in an environment that has only the serving
set installed. Python runs this at start-up when its folder is on PYTHONPATH, so it applies to every Python process
of a server started with that environment (bentoml's workers included)."""

import os

if os.environ.get("ESSAYSCORE_TEST_HIDDEN"):
    import importlib.abc
    import json
    import re
    import sys

    _HIDDEN = json.loads(os.environ["ESSAYSCORE_TEST_HIDDEN"])
    _MODULES = frozenset(_HIDDEN["modules"])
    _DISTRIBUTIONS = frozenset(_HIDDEN["distributions"])

    class _HideFinder(importlib.abc.MetaPathFinder):
        """Wraps one finder of ``sys.meta_path``: hidden top-level modules and distributions are not found."""

        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in _MODULES:
                return None
            find = getattr(self.inner, "find_spec", None)
            return find(name, path, target) if find is not None else None

        def find_distributions(self, context=None):
            from importlib.metadata import DistributionFinder

            find = getattr(self.inner, "find_distributions", None)
            if find is None:
                return iter(())
            return (d for d in find(context or DistributionFinder.Context())
                    if re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower() not in _DISTRIBUTIONS)

        def invalidate_caches(self):
            invalidate = getattr(self.inner, "invalidate_caches", None)
            if invalidate is not None:
                invalidate()

    sys.meta_path[:] = [_HideFinder(finder) for finder in sys.meta_path]
