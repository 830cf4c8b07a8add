"""Hand-engineered features of an essay (and its prompt), in one registry order.

>>> from essayscore.features import FeatureExtractor, FEATURES
>>> fx = FeatureExtractor()                      # embedded offline checker unless settings.languagetool_url
>>> res = fx.extract(essay_text, prompt_text)    # res.values: float32 (len(FEATURES),), res.matches
"""

from essayscore.features.extractor import (
    FeatureExtractor,
    FeatureResult,
    add_embedding_features,
)
from essayscore.features.grammar import (
    CATEGORIES,
    EmbeddedChecker,
    GrammarChecker,
    GrammarMatch,
    LanguageToolChecker,
    LanguageToolError,
    get_checker,
)
from essayscore.features.registry import FEATURES, GROUPS, FeatureSpec, feature_names

__all__ = [
    "CATEGORIES",
    "FEATURES",
    "GROUPS",
    "EmbeddedChecker",
    "FeatureExtractor",
    "FeatureResult",
    "FeatureSpec",
    "GrammarChecker",
    "GrammarMatch",
    "LanguageToolChecker",
    "LanguageToolError",
    "add_embedding_features",
    "feature_names",
    "get_checker",
]
