"""essayscore: IELTS band and CEFR level for English essays, with explanations.

The runtime package: everything both training and serving need (text normalisation, features, encoder,
scoring, explanations, artifacts). Training code lives in ``training/`` and imports this package, never the
reverse.
"""

__version__ = "0.1.0"
