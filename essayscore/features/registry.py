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
        errors,
        learned_errors,
        length,
        lexical,
        prompt,
        readability,
        sophistication,
        syntax,
    )

    modules = (length, lexical, sophistication, readability, errors, syntax, cohesion, prompt, learned_errors)
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
