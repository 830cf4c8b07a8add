"""The serving set, and an environment that has nothing else (tests/test_serving_without_torch.py).

The serving set is what the Bento installs: ``[project].dependencies`` of pyproject.toml plus the Bento's extra
(scripts/sync_bento_requirements.py), closed over the installed distributions' own requirements. :func:`env` gives
the environment variables under which every other installed distribution (torch, transformers, pandas...: the
``train``, ``export`` and ``dev`` extras) is unimportable in a Python process and all its children
(``serving_only_site/sitecustomize.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
SITE = Path(__file__).resolve().parent / "serving_only_site"
# never in the Bento (bentofile.yaml ships essayscore/ and service.py only)
NOT_SHIPPED = ("training", "devtools", "tests", "benchmarks", "loadtests")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bento_requirements() -> list[str]:
    spec = importlib.util.spec_from_file_location("scripts_sync", REPO / "scripts" / "sync_bento_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.bento_requirements()


def closure(requirements: list[str]) -> set[str]:
    """Normalised names of the installed distributions ``requirements`` need, their requirements (with the
    extras asked for) included. Raises when one is not installed: the closure would be incomplete."""
    environment = default_environment()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        key = (normalise(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        distribution = metadata.distribution(requirement.name)  # PackageNotFoundError: not installed
        for line in distribution.requires or []:
            dependency = Requirement(line)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(dependency.marker.evaluate({**environment, "extra": e})
                                                for e in extras):
                todo.append(dependency)
    return {name for name, _ in seen}


def hidden(allowed: set[str]) -> dict[str, list[str]]:
    """Installed top-level modules and distributions outside ``allowed`` (and this project's own)."""
    allowed = {*allowed, "essayscore"}
    distributions = {normalise(d.metadata["Name"]) for d in metadata.distributions()}
    modules = {module for module, owners in metadata.packages_distributions().items()
               if not {normalise(o) for o in owners} & allowed}
    return {"modules": sorted(modules | set(NOT_SHIPPED)), "distributions": sorted(distributions - allowed)}


def env(extra_requirements: tuple[str, ...] = ()) -> dict[str, str]:
    """Environment variables for a process that sees only the serving set (plus ``extra_requirements``)."""
    spec = hidden(closure(bento_requirements() + list(extra_requirements)))
    path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "ESSAYSCORE_TEST_HIDDEN": json.dumps(spec)}
